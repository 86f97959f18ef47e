"""Cross-site request forgery protection for form pages.

Each browser session gets a random token, put in every form as a hidden field; every
POST, PUT, PATCH or DELETE outside /api/ must send it back. The JSON API is exempt: it
authenticates with Bearer tokens, which a browser never adds to a forged request. So is
Open311's POST (tracker.open311, marked with `exempt`): a program's, proved by its api_key.
"""

import hmac
import secrets

from flask import Flask, abort, current_app, request, session
from markupsafe import Markup, escape

FIELD = "csrf_token"
SESSION_KEY = "csrf"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EXEMPT: set = set()  # views that authenticate each request by a token in their URL


def exempt(view):
    """Exempt one view: only for a POST that no page of ours sends and that carries its own
    proof: RFC 8058 one-click unsubscribe (a URL token), an Open311 client (its api_key)."""
    _EXEMPT.add(view)
    return view


def init_app(app: Flask) -> None:
    app.before_request(check_csrf)
    app.jinja_env.globals["csrf_field"] = csrf_field


def csrf_token() -> str:
    """This browser session's token, made on first use (signing in makes a new one)."""
    if SESSION_KEY not in session:
        session[SESSION_KEY] = secrets.token_urlsafe(32)
    return session[SESSION_KEY]


def csrf_field() -> Markup:
    """The hidden form field that carries the token."""
    return Markup(f'<input type="hidden" name="{FIELD}" value="{escape(csrf_token())}">')


def check_csrf() -> None:
    """Refuse (400) an unsafe request to a page that does not carry the session's token."""
    if request.method not in UNSAFE_METHODS or request.path.startswith("/api/"):
        return
    if current_app.view_functions.get(request.endpoint) in _EXEMPT:
        return
    expected = session.get(SESSION_KEY, "")
    sent = request.form.get(FIELD, "")
    if not expected or not hmac.compare_digest(expected.encode(), sent.encode()):
        abort(
            400,
            "This form has expired or did not come from this site. Reload the page and try again.",
        )
