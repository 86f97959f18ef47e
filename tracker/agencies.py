"""Agencies as the public pages see them: their names (retired agencies keep theirs, so
past works and figures still say who did them)."""

from datetime import datetime

from sqlmodel import Session, select

from tracker.errors import NotFound
from tracker.models import MEASURE_AGENCY, Agency, Node, join_measure_agency


def agency_names(session: Session) -> dict[str, str]:
    """{agency id: name} for every agency the database knows, retired ones included."""
    return dict(session.exec(select(Agency.id, Agency.name)).all())


def find_agency(session: Session, agency_id: str) -> Agency:
    """The agency, retired or not (a retired one keeps its page); NotFound if unknown."""
    agency = session.get(Agency, agency_id)
    if agency is None:
        raise NotFound(f"no agency {agency_id!r}")
    return agency


def retired_measures(session: Session, agency_id: str) -> list[tuple[str, str, datetime]]:
    """(id, title, retired at) of the agency's measures the tree no longer has, newest
    retired first: its past responsibilities, which the live tree cannot show."""
    query = join_measure_agency(
        select(Node.id, Node.title, Node.retired_at).where(
            Node.kind == "measure", Node.retired_at.is_not(None)
        )
    ).where(agency_id == MEASURE_AGENCY)
    return [tuple(row) for row in session.exec(query.order_by(Node.retired_at.desc(), Node.title))]
