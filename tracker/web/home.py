"""The city overview."""

from flask import Blueprint, render_template

from tracker.db import get_session
from tracker.demo import has_demo_data
from tracker.places import list_places

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    """The city and its neighbourhoods (the full overview and map come later)."""
    session = get_session()
    places = list_places(session, with_geometry=False)
    return render_template(
        "home/index.html",
        city=next((p for p in places if p["level"] == "city"), None),
        neighbourhoods=[p for p in places if p["level"] == "neighbourhood"],
        demo=has_demo_data(session),
    )
