"""A street's page (`/streets/ID`): what is happening on my street."""

import json
from datetime import UTC, datetime

import shapely
from flask import Blueprint, current_app, request
from shapely.geometry import shape

from tracker.clock import local_time
from tracker.db import get_session
from tracker.errors import NotFound
from tracker.maps import WORK_STYLES, Line, WorkMark, build_map
from tracker.places import NEAR_STREET_M, shares_near_street, street_detail
from tracker.rollup import app_cache, rollup
from tracker.web.page_cache import public_page
from tracker.web.pages import (
    agency_names,
    cached_map,
    city_zone,
    map_tiles,
    query_cursor,
    render_page,
    tree,
)
from tracker.works import shown_status, street_distances, works_on_street_newest

bp = Blueprint("streets", __name__)

STREET_WORKS_PAGE = 25  # works listed (and mapped) per page: a phone's long scroll
# A line work touching the street with less than this share of its length near it runs
# across it or away from it (a side street's works), rather than along it.
CROSSING_SHARE = 0.5


@bp.get("/streets/<street_id>")
@public_page
def street(street_id: str):
    """The works on or near one street, newest first (404 for no such street)."""
    session = get_session()
    found = street_detail(session, street_id)
    if found is None:
        raise NotFound(f"no street {street_id!r}")
    after = query_cursor(request.args.get("after"))
    works_page = works_on_street_newest(session, street_id, after=after, limit=STREET_WORKS_PAGE)
    definitions = tree()
    places = [definitions.places[p] for p in found["places"] if p in definitions.places]
    main = places[0] if places and places[0].id == found["main_place_id"] else None
    area = definitions.places.get(main.parent_id) if main and main.parent_id else None
    names = agency_names()
    timezone = city_zone()
    distances = street_distances(session, street_id, works_page.works)
    crossing = _crossing(found["geometry"], works_page.works, distances)
    now = datetime.now(UTC)
    works = [
        {
            "id": f"{w.agency_id}/{w.ref}",
            "agency_id": w.agency_id,
            "ref": w.ref,
            "agency": names.get(w.agency_id, w.agency_id),
            "title": w.title,
            "status": shown_status(w, now),
            "reported": w.status,
            "planned_start": w.planned_start,
            "planned_end": w.planned_end,
            "actual_start": w.actual_start,
            "actual_end": w.actual_end,
            "updated": local_time(w.updated_at, timezone),
            "distance_m": distances.get(w.id),
            "crosses": w.id in crossing,
            "geometry": w.geometry,
        }
        for w in works_page.works
    ]

    def build():
        return build_map(
            lines=[Line(name=found["name"], geometry=found["geometry"])],
            works=[
                WorkMark(
                    id=w["id"],
                    title=w["title"],
                    status=w["status"],
                    agency=w["agency"],
                    geometry=json.loads(w["geometry"]),
                )
                for w in works
            ],
            tiles=map_tiles(),
            bounds=_around(found["geometry"]),
            label=f"Map of {found['name']} and the works on or near it",
        )

    rendered = cached_map("street", (street_id, after, now.date()), build)
    return render_page(
        "public/street.html",
        street=found,
        main=main,
        area=area if area is not None and area.level != "city" else None,
        city=definitions.places.get(definitions.city_id) if definitions.city_id else None,
        places=[_place_results(p) for p in places],
        works=works,
        total=works_page.total,
        after=after,
        next_after=works_page.after,
        near_m=NEAR_STREET_M,
        work_styles=WORK_STYLES,
        counts={s: sum(1 for w in works if w["status"] == s) for s in WORK_STYLES},
        map=rendered,
    )


def _around(geometry: dict) -> list[float]:
    """[west, south, east, north] of the street with a margin: the map shows the street,
    not every far end of the works along it (a crossing street's rebuild runs for km)."""
    lons, lats = [], []
    for line in geometry["coordinates"]:
        for lon, lat in line:
            lons.append(lon)
            lats.append(lat)
    pad = 0.002  # about 200 m
    return [min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad]


def _place_results(place) -> dict:
    """A neighbourhood the street runs through, with each result's figures there (the
    roll-up, cached per data version, as /api/v1/rollup?place= answers)."""
    answer = rollup(
        get_session(), place_id=place.id, on=None, cache=app_cache(current_app), tree=tree()
    )
    return {"place": place, "results": [r for r in answer.results if r.takes_part]}


def _crossing(street: dict, works, distances: dict[int, float]) -> set[int]:
    """Ids of the line works that touch the street but mostly lie away from it: works on
    a side street that crosses or meets this one, rather than along it."""
    touching = [w for w in works if distances.get(w.id, NEAR_STREET_M) < 1]
    geometries = [shapely.from_geojson(w.geometry) for w in touching]
    lines = [
        (w, g)
        for w, g in zip(touching, geometries, strict=True)
        if g.geom_type.endswith("LineString")
    ]
    shares = shares_near_street(shape(street), [g for _, g in lines])
    return {w.id for (w, _), share in zip(lines, shares, strict=True) if share < CROSSING_SHARE}
