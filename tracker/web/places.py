"""A place's page (`/places/ID`): its results, works and how it compares with the city."""

from flask import Blueprint

from tracker.errors import NotFound

bp = Blueprint("places", __name__)


@bp.get("/places/<place_id>")
def place(place_id: str):
    """The results tree and works of one area or neighbourhood (404 for no such place)."""
    raise NotFound(f"no place {place_id!r}")
