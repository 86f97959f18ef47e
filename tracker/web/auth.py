"""Staff sign-in and sign-out, the signed-in user, and role checks for pages.

The browser session (a signed cookie) holds the account id and the account's session
version. Each request loads the account again, so a disabled account is signed out at
once; signing out bumps the version, so a copy of the cookie stops working too.
Signing in clears the session first, so nothing set before (a CSRF token, a fixated
session) survives into the signed-in one.
"""

import functools
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask import session as web_session

from tracker.auth import (
    LoginRefused,
    LoginThrottle,
    active_user,
    authenticate,
    end_sessions,
    require_role,
)
from tracker.db import get_session, transaction
from tracker.models import User

bp = Blueprint("auth", __name__)


def init_app(app: Flask) -> None:
    app.extensions["login_throttle"] = LoginThrottle()
    app.register_blueprint(bp)
    app.context_processor(lambda: {"current_user": current_user()})


def current_user() -> User | None:
    """The signed-in, still active account of this request, or None."""
    if "current_user" not in g:
        g.current_user = _load_user()
    return g.current_user


def _load_user() -> User | None:
    user_id, version = web_session.get("uid"), web_session.get("ver")
    if not isinstance(user_id, int) or not isinstance(version, int):
        return None
    user = active_user(get_session(), user_id)
    if user is None or user.session_version != version:
        web_session.clear()  # disabled, deleted or signed out since signing in
        return None
    return user


def login_required(role: str | None = None):
    """Decorate a view: anonymous visitors go to /login, other roles get 403."""

    def decorate(view):
        @functools.wraps(view)
        def wrapped(**kwargs):
            user = current_user()
            if user is None:
                target = request.full_path.rstrip("?") if request.method == "GET" else None
                return redirect(url_for("auth.login", next=target), 303)
            require_role(user, role, what="This page")
            return view(**kwargs)

        return wrapped

    return decorate


def start_session(user: User) -> None:
    """Sign `user` in: a fresh session holding only the account id and session version."""
    web_session.clear()
    web_session["uid"] = user.id
    web_session["ver"] = user.session_version
    web_session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME
    g.current_user = user


@bp.get("/login")
def login():
    """The sign-in form."""
    return render_template("auth/login.html", email="", next=request.args.get("next", ""))


@bp.post("/login")
def login_post():
    """Check the credentials; on success start a new session and go on."""
    email = request.form.get("email", "")
    with transaction() as session:  # a refusal is kept too: it counts towards locking
        try:
            user = authenticate(
                session,
                email,
                request.form.get("password", ""),
                address=request.remote_addr or "unknown",
                throttle=current_app.extensions["login_throttle"],
            )
        except LoginRefused as exc:
            refused = exc
        else:
            refused = None
    if refused is not None:
        flash(refused.message, "error")
        page = render_template("auth/login.html", email=email, next=request.form.get("next", ""))
        return page, refused.status
    start_session(user)
    flash(f"Signed in as {user.email}.", "info")
    wanted = request.form.get("next", "")
    page = _next_page(user, wanted)
    if wanted and page != wanted:
        flash("The page you were sent to is not an address on this site; this is yours.", "info")
    return redirect(page, 303)


@bp.post("/logout")
def logout():
    """End the session, and every other session of the account (copies of the cookie)."""
    user = current_user()
    if user is not None:
        with transaction() as session:
            end_sessions(session, user.id)
    web_session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("home.index"), 303)


def _next_page(user: User, wanted: str) -> str:
    """Where to go after signing in: the page asked for if it is on this site, else the
    user's own page. "//host" and "/\\host" lead a browser to another site."""
    parts = urlsplit(wanted)
    local = wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted
    # A control character (a CR LF from "%0d%0a") cannot go in a Location header.
    printable = len(wanted) <= 2000 and wanted.isprintable() and " " not in wanted
    if local and printable and not parts.scheme and not parts.netloc:
        return wanted
    return url_for("agency.index" if user.role == "agency" else "admin.index")
