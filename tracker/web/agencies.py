"""An agency's page (`/agencies/ID`) and a work's (`/works/AGENCY/ID`)."""

from flask import Blueprint

from tracker.errors import NotFound

bp = Blueprint("agencies", __name__)


@bp.get("/agencies/<agency_id>")
def agency(agency_id: str):
    """An agency's outputs, measures, reporting timeliness, feeds and works."""
    raise NotFound(f"no agency {agency_id!r}")


@bp.get("/works/<agency_id>/<path:ref>")
def work(agency_id: str, ref: str):
    """One work: its status history, dates, place and location."""
    raise NotFound(f"no work {agency_id}/{ref}")
