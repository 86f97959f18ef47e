"""A street's page (`/streets/ID`): what is happening on my street."""

from flask import Blueprint

from tracker.errors import NotFound

bp = Blueprint("streets", __name__)


@bp.get("/streets/<street_id>")
def street(street_id: str):
    """The works on or near one street, newest first (404 for no such street)."""
    raise NotFound(f"no street {street_id!r}")
