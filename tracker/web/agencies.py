"""An agency's page (`/agencies/ID`) and a work's (`/works/AGENCY/ID`)."""

import json
from datetime import UTC, datetime

from flask import Blueprint, current_app, request

from tracker import challenges
from tracker.agencies import find_agency, retired_measures
from tracker.clock import local_time
from tracker.db import get_session
from tracker.feeds import feed_health
from tracker.maps import WORK_STYLES, Area, WorkMark, build_map
from tracker.rollup import app_cache, rollup, timeliness
from tracker.vocabulary import WORK_STATUSES
from tracker.web.comments import comment_rows
from tracker.web.page_cache import public_page
from tracker.web.pages import (
    cached_map,
    city_zone,
    map_tiles,
    query_cursor,
    render_page,
    tree,
)
from tracker.works import (
    OPEN_STATUSES,
    STATUS_UNKNOWN_AFTER,
    agency_shown_counts,
    agency_works,
    find_work,
    main_place_names,
    point_on_work,
    shown_status,
    status_history,
    work_places,
    work_streets,
)

bp = Blueprint("agencies", __name__)

AGENCY_WORKS_SHOWN = 25  # works a page of the agency's list shows; ?after= pages on
WORK_MAP_AREAS = 8  # a work in more neighbourhoods than this is drawn without them
CHANNELS = {
    "api": "the API",
    "csv": "a CSV upload",
    "web": "the agency's web form",
    "feed": "the agency's feed",
    "demo": "demo data",
}


@bp.get("/agencies/<agency_id>")
def agency(agency_id: str):
    """An agency's outputs, measures, reporting timeliness, feeds and works.

    Built on every view, unlike the other public pages: its feeds' latest runs change
    without a stored batch (a failed run stores none), so the data stamp cannot key it.
    """
    session = get_session()
    agency = find_agency(session, agency_id)
    after = query_cursor(request.args.get("after"), with_agency=False)
    definitions = tree()
    cache = app_cache(current_app)
    now = datetime.now(UTC)
    timezone = city_zone()
    # The agency's measures are the ones its timeliness lists: one rule for whose they are.
    timely = {row["measure"]: row for row in timeliness(session, agency_id=agency_id, cache=cache)}
    city = (
        rollup(session, place_id=definitions.city_id, on=None, cache=cache, tree=definitions)
        if definitions.city_id
        else None
    )
    outputs = []
    for output_id, result_id in _outputs(definitions):
        node = definitions.nodes[output_id]
        measures = [
            {
                "id": m,
                "title": definitions.nodes[m].title,
                "figures": city.find(m) if city else None,
                "timeliness": timely[m],
                "from_works": definitions.measures[m].from_works,
            }
            for m in node.children
            if m in timely
        ]
        if measures:
            outputs.append(
                {
                    "id": output_id,
                    "title": node.title,
                    "result": definitions.nodes[result_id] if result_id else None,
                    "measures": measures,
                }
            )
    feeds = [feed for feed in feed_health(session, now=now) if feed.agency == agency_id]
    works = agency_works(session, agency_id, after=after, limit=AGENCY_WORKS_SHOWN)
    counts = agency_shown_counts(session, agency_id, now)
    return render_page(
        "public/agency.html",
        agency=agency,
        city=city,
        outputs=outputs,
        timeliness=[row for output in outputs for row in output["measures"]],
        retired=retired_measures(session, agency_id),
        feeds=feeds,
        works=[(w, shown_status(w, now)) for w in works.works],
        places=main_place_names(session, works.works),
        works_total=works.total,
        next_after=works.after,
        after=after,
        counts=counts,
        work_statuses=(*WORK_STATUSES, "unknown"),
        unknown_weeks=STATUS_UNKNOWN_AFTER.days // 7,
        local=lambda moment: _local(moment, timezone),
    )


def _outputs(definitions) -> list[tuple[str, str | None]]:
    """(output id, its result's id) for every output in tree order."""
    found = []

    def walk(node_id: str, result_id: str | None) -> None:
        node = definitions.nodes[node_id]
        if node.kind == "output":
            found.append((node_id, result_id))
        for child in node.children:
            walk(child, node_id if node.kind == "result" else result_id)

    for root in definitions.roots:
        walk(root, None)
    return found


@bp.get("/works/<agency_id>/<path:ref>")
@public_page
def work(agency_id: str, ref: str):
    """One work: its status history, dates, place and location."""
    session = get_session()
    work = find_work(session, agency_id, ref)
    agency = find_agency(session, agency_id)
    definitions = tree()
    cache = app_cache(current_app)
    now = datetime.now(UTC)
    timezone = city_zone()
    status = shown_status(work, now)
    places = work_places(session, work.id)
    streets = work_streets(session, work)
    lon, lat = point_on_work(work)
    measure_node = definitions.nodes.get(work.measure_id) if work.measure_id else None
    measure = definitions.measures.get(work.measure_id) if work.measure_id else None
    main_place = next((p for p, _ in places if p.id == work.main_place_id), None)
    if main_place is None and places:
        main_place = places[0][0]
    city_name = definitions.places[definitions.city_id].name if definitions.city_id else None
    work_id = f"{work.agency_id}/{work.ref}"

    def area(place, share) -> Area:
        figures = None
        if measure_node is not None:
            figures = rollup(
                session, place_id=place.id, on=None, cache=cache, tree=definitions
            ).find(measure_node.id)
        here = f"{share * 100:.0f}% of this work lies here"
        if figures is None or not figures.takes_part:
            return Area(
                id=place.id,
                name=place.name,
                geometry=json.loads(place.display_geometry),
                status="no_data",
                summary=here,
            )
        return Area(
            id=place.id,
            name=place.name,
            geometry=json.loads(place.display_geometry),
            status=figures.status,
            summary=f"{here}; coloured by {measure_node.title} here",
        )

    def build():
        return build_map(
            areas=[area(p, s) for p, s in places] if len(places) <= WORK_MAP_AREAS else [],
            works=[
                WorkMark(
                    id=work_id,
                    title=work.title,
                    status=status,
                    agency=agency.name,
                    geometry=json.loads(work.geometry),
                )
            ],
            tiles=map_tiles(),
            label=f"Map of where the work {work.title} is",
        )

    rendered = cached_map("work", (work.id, work.updated_at, status), build)
    return render_page(
        "public/work.html",
        work=work,
        work_id=work_id,
        agency=agency,
        status=status,
        status_style=WORK_STYLES[status],
        unknown_weeks=STATUS_UNKNOWN_AFTER.days // 7,
        was_open=work.status in OPEN_STATUSES,
        history=status_history(session, work.id),
        comments=comment_rows(session, work_id=work.id),
        channels=CHANNELS,
        places=places,
        streets=streets,
        point=(lon, lat),
        main_place=main_place,
        city_id=definitions.city_id,
        city_name=city_name,
        measure=measure_node,
        unit=measure.unit if measure else None,
        map=rendered,
        challenges=challenges.for_work(session, work.id),
        local=lambda moment: _local(moment, timezone),
    )


def _local(moment: datetime | None, timezone: str) -> str:
    """A stored time as residents read it, in Christchurch time: "2 Dec 2026, 4:05 PM"."""
    if moment is None:
        return "—"
    return local_time(moment, timezone).strftime("%-d %b %Y, %-I:%M %p")
