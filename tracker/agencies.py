"""Agencies as the public pages see them: their names (retired agencies keep theirs, so
past works and figures still say who did them)."""

from sqlmodel import Session, select

from tracker.models import Agency


def agency_names(session: Session) -> dict[str, str]:
    """{agency id: name} for every agency the database knows, retired ones included."""
    return dict(session.exec(select(Agency.id, Agency.name)).all())
