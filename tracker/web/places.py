"""A place's page (`/places/ID`): its results, works and how it compares with the city."""

import json
from datetime import UTC, datetime

import shapely.geometry
from flask import Blueprint, current_app, redirect, request, url_for

from tracker.clock import local_time
from tracker.db import get_session
from tracker.errors import NotFound
from tracker.limits import EARLIEST_DATE, LATEST_DATE, WORKS_PAGE_SIZE
from tracker.maps import REPORT_STYLES, STATUS_STYLES, WORK_STYLES, Area, WorkMark, build_map
from tracker.places.search import place_geometry
from tracker.rollup import app_cache, rollup
from tracker.text import search_key
from tracker.web.comments import comment_rows
from tracker.web.page_cache import public_page
from tracker.web.pages import (
    agency_names,
    based_on,
    cached_map,
    city_zone,
    freshness,
    map_tiles,
    query_cursor,
    query_date,
    query_work_statuses,
    render_page,
    tree,
)
from tracker.web.reports import place_report_marks, place_reports
from tracker.works import shown_status, shown_status_counts, works_in_place

bp = Blueprint("places", __name__)

PAGE_SIZE = WORKS_PAGE_SIZE  # works per page of the table (and the map beside it)


@bp.get("/places/<place_id>")
@public_page
def place(place_id: str):
    """The results tree and works of one area or neighbourhood (404 for no such place)."""
    session = get_session()
    definitions = tree()
    if place_id == definitions.city_id:
        return redirect(url_for("home.index"))
    info = definitions.places.get(place_id)
    if info is None:
        raise NotFound(f"no place {place_id!r}")
    on = query_date(request.args.get("date"))
    cache = app_cache(current_app)
    here = rollup(session, place_id=place_id, on=on, cache=cache, tree=definitions)
    city = rollup(
        session, place_id=definitions.city_id, on=here.date, cache=cache, tree=definitions
    )
    results = [r for r in here.results if r.takes_part]
    chosen = request.args.get("result") or (results[0].id if results else None)
    chosen_figures = here.find(chosen) if chosen else None
    if chosen is not None and (
        chosen_figures is None or chosen_figures.kind != "result" or not chosen_figures.takes_part
    ):
        raise NotFound(f"no result {chosen!r} at {info.name}")
    statuses = query_work_statuses(request.args.getlist("status"))
    after = query_cursor(request.args.get("after"))
    now = datetime.now(UTC)
    works = works_in_place(session, place_id, after=after, limit=PAGE_SIZE, shown=statuses, now=now)
    counts = shown_status_counts(session, place_id, now)
    names = agency_names()
    timezone = city_zone()
    rows = [
        {
            "work": w,
            "id": f"{w.agency_id}/{w.ref}",
            "status": shown_status(w, now),
            "agency": names.get(w.agency_id, w.agency_id),
            "updated": local_time(w.updated_at, timezone),
        }
        for w in works.works
    ]

    def build():
        geometry = place_geometry(session, place_id)
        summary = based_on(chosen_figures, definitions, place_id) if chosen_figures else ""
        return build_map(
            areas=[
                Area(
                    id=place_id,
                    name=info.name,
                    geometry=geometry,
                    status=chosen_figures.status if chosen_figures else "no_data",
                    summary=summary,
                )
            ]
            if geometry
            else [],
            works=[
                WorkMark(
                    id=row["id"],
                    title=row["work"].title,
                    status=row["status"],
                    agency=row["agency"],
                    geometry=json.loads(row["work"].geometry),
                )
                for row in rows
            ],
            reports=place_report_marks(session, definitions, place_id),
            tiles=map_tiles(),
            bounds=_padded_bounds(geometry) if geometry else None,
            label=f"Map of {info.name} and its works",
        )

    key = (place_id, chosen, here.date, tuple(statuses), after, PAGE_SIZE, now.date())
    rendered = cached_map("place", key, build)
    return render_page(
        "public/place.html",
        place=info,
        trail=_breadcrumbs(definitions, info),
        children=sorted(
            (p for p in definitions.places.values() if p.parent_id == place_id),
            key=lambda p: search_key(p.name),
        ),
        here=here,
        comments=comment_rows(session, place_id=place_id),
        city=city,
        date_asked=on,
        calendar=(EARLIEST_DATE, LATEST_DATE),
        results=results,
        chosen=chosen,
        chosen_figures=chosen_figures,
        rows=rows,
        works=works,
        counts=counts,
        statuses=statuses,
        status_styles=STATUS_STYLES,
        work_styles=WORK_STYLES,
        map=rendered,
        reports=place_reports(session, definitions, place_id),
        report_styles=REPORT_STYLES,
        based_on=lambda node: based_on(node, definitions, place_id),
        city_based_on=lambda node: based_on(node, definitions, definitions.city_id),
        freshness=freshness,
    )


def _breadcrumbs(definitions, info) -> list:
    """The places above `info`, the city first."""
    above = []
    parent = definitions.places.get(info.parent_id) if info.parent_id else None
    while parent is not None:
        above.insert(0, parent)
        parent = definitions.places.get(parent.parent_id) if parent.parent_id else None
    return above


def _padded_bounds(geometry: dict) -> list[float]:
    """[west, south, east, north] around the place with a margin: the map shows the place,
    not the whole length of a road that runs through it."""
    west, south, east, north = shapely.geometry.shape(geometry).bounds
    pad_x, pad_y = (east - west) * 0.08, (north - south) * 0.08
    return [west - pad_x, south - pad_y, east + pad_x, north + pad_y]
