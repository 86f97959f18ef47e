"""Search (`/search?q=TEXT`): streets and places by name, each street with its suburb.

One match goes straight to its page; none says so and suggests near names. The page
works without JavaScript; static/js/search.js adds suggestions while typing.
"""

import difflib
from typing import Any

from flask import Blueprint, current_app, redirect, request, url_for

from tracker.db import get_session
from tracker.errors import TrackerError
from tracker.places import search_places, search_streets, street_names
from tracker.rollup.definitions import TreeDef
from tracker.text import search_key
from tracker.web.page_cache import current_stamp, public_page
from tracker.web.pages import render_page, tree

bp = Blueprint("search", __name__)

MAX_QUERY = 100  # characters: no street or place name is longer
MATCHES = 20  # of each kind shown; more asks the resident to type more
SUGGESTIONS = 6  # near names offered when nothing matches
LEVEL_WORDS = {"city": "City", "area": "Area", "neighbourhood": "Neighbourhood"}


@bp.get("/search")
@public_page
def search():
    """Streets and places by name; one match goes straight to its page."""
    q = " ".join(request.args.get("q", "").split())
    if len(q) > MAX_QUERY:
        raise TrackerError(f"a search is at most {MAX_QUERY} characters; try the street's name")
    definitions = tree()
    if not q:
        return render_page(
            "public/search.html",
            q="",
            searched=False,
            place_names=_names(definitions),
            city_name=_city_name(definitions),
        )
    session = get_session()
    streets = search_streets(session, q, MATCHES + 1, abbreviations=True)
    places = search_places(session, q, MATCHES + 1, abbreviations=True)
    if len(streets) + len(places) == 1:
        return redirect(_place_url(places[0]) if places else _street_url(streets[0]), code=302)
    return render_page(
        "public/search.html",
        q=q,
        searched=True,
        streets=[_street_match(s, definitions) for s in streets[:MATCHES]],
        places=[_place_match(p, definitions) for p in places[:MATCHES]],
        more=len(streets) > MATCHES or len(places) > MATCHES,
        suggestions=[] if streets or places else near_names(q),
        place_names=_names(definitions),
        city_name=_city_name(definitions),
    )


def _street_url(street: dict[str, Any]) -> str:
    return url_for("streets.street", street_id=street["id"])


def _place_url(place: dict[str, Any]) -> str:
    if place["level"] == "city":
        return url_for("home.index")
    return url_for("places.place", place_id=place["id"])


def _street_match(street: dict[str, Any], definitions: TreeDef) -> dict[str, Any]:
    """A street as the results list shows it: its suburb (main place) and the others it
    crosses, by name."""
    names = [definitions.places[p].name for p in street["places"] if p in definitions.places]
    return {
        "url": _street_url(street),
        "name": street["name"],
        "suburb": names[0] if names else None,
        "also": names[1:],
    }


def _place_match(place: dict[str, Any], definitions: TreeDef) -> dict[str, Any]:
    """A place as the results list shows it: its level and the place it belongs to."""
    parent = definitions.places.get(place["parent"]) if place["parent"] else None
    if parent is not None and parent.level == "city":
        parent = None  # "in Christchurch" tells a resident nothing
    return {
        "url": _place_url(place),
        "name": place["name"],
        "level": LEVEL_WORDS.get(place["level"], place["level"].capitalize()),
        "parent": parent.name if parent is not None else None,
    }


def _city_name(definitions: TreeDef) -> str:
    city = definitions.places.get(definitions.city_id) if definitions.city_id else None
    return city.name if city is not None else "City"


def _names(definitions: TreeDef) -> dict[str, str]:
    """{place id: name}, for the autocomplete to name each suggestion's suburb."""
    return {p.id: p.name for p in definitions.places.values() if p.level != "city"}


def near_names(q: str) -> list[str]:
    """Street and place names close to `q` (case and macrons ignored), closest first."""
    by_key = _name_index()
    keys = difflib.get_close_matches(search_key(q), list(by_key), n=SUGGESTIONS, cutoff=0.6)
    return [by_key[k] for k in keys]


def _name_index() -> dict[str, str]:
    """{folded name: name} of every street and place, built once per data stamp and kept
    in the app (a search with no match should not read every street name again)."""
    session = get_session()
    stamp = current_stamp()
    cached = current_app.extensions.get("search_names")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    names = street_names(session) + [p.name for p in tree().places.values()]
    index: dict[str, str] = {}
    for name in names:
        index.setdefault(search_key(name), name)
    current_app.extensions["search_names"] = (stamp, index)
    return index
