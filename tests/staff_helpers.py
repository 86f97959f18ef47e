"""Helpers shared by the staff page tests: accounts, signing in, forms with their CSRF token."""

import re

from sqlalchemy import func, select

from tracker.auth import create_user
from tracker.db import get_session
from tracker.models import ApiToken, AuditEvent, Batch, Observation, User, Work

PASSWORD = "correct horse battery"
STORED = (Batch, Observation, Work, ApiToken, User, AuditEvent)


def add_user(app, email: str, role: str = "agency", agency_id: str | None = "eqc") -> int:
    """Create an account straight in the database; returns its id."""
    with app.app_context():
        session = get_session()
        user = create_user(session, email, PASSWORD, role, agency_id if role == "agency" else None)
        session.commit()
        return user.id


def csrf_token(client, page: str = "/login") -> str:
    """The CSRF token of the client's session, read from a form on `page`."""
    html = client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def sign_in(client, email: str, password: str = PASSWORD, **environ):
    """Post the sign-in form as a browser would (token from the form)."""
    data = {"email": email, "password": password, "csrf_token": csrf_token(client)}
    return client.post("/login", data=data, **environ)


def post_form(client, path: str, data: dict, *, page: str = "/login", **options):
    """POST `data` to `path` with the session's CSRF token added."""
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page)}, **options)


def counts(app) -> dict[str, int]:
    """Rows in each table a staff form can write, to check that a refusal stored nothing."""
    with app.app_context():
        session = get_session()
        return {m.__name__: session.scalar(select(func.count()).select_from(m)) for m in STORED}
