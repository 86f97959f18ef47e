"""Baseline HTTP security: session cookie flags and response headers on every answer."""

import secrets

from flask import Flask, Response, current_app, g, request

from tracker.errors import TrackerError


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.config.update(
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="tracker_session",
        PERMANENT_SESSION_LIFETIME=8 * 3600,
    )
    app.before_request(_make_nonce)
    app.before_request(_refuse_nul)
    app.after_request(_set_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce


def csp_nonce() -> str:
    """This response's nonce for the inline <script>/<style> blocks we write ourselves."""
    if "csp_nonce" not in g:
        _make_nonce()
    return g.csp_nonce


def _make_nonce() -> None:
    g.csp_nonce = secrets.token_urlsafe(16)


def _refuse_nul() -> None:
    """No parameter or form field may hold a NUL character: PostgreSQL refuses it in text
    (an error in the middle of the request), and no name, date or note needs one."""
    # A CSV body is the write path's to read (its cells are checked there), not a form.
    form = request.form if request.mimetype != "text/csv" else {}
    for values in (request.args, form):
        for name, value in values.items(multi=True) if values else ():
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "")
                raise TrackerError(f"parameter {shown!r} holds a NUL character")


def _set_headers(response: Response) -> Response:
    # Map tiles (TRACKER_MAP_TILES) are the only outside resource a page loads; scripts and
    # styles are our own (vendored under static/), and the map scripts carry the nonce.
    tiles = current_app.config["SETTINGS"].tile_origin() or ""
    nonce = csp_nonce()
    response.headers["Content-Security-Policy"] = "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            f"style-src 'self' 'nonce-{nonce}'",
            # Leaflet and Folium position map panes with style attributes.
            "style-src-attr 'unsafe-inline'",
            f"img-src 'self' data: {tiles}".strip(),
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "geolocation=(self), camera=(), microphone=()"
    return response
