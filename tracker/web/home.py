"""The city overview (`/`); search (`/search`) is tracker.web.search."""

from datetime import UTC, datetime

from flask import Blueprint, current_app, request

from tracker.db import get_session
from tracker.errors import NotFound
from tracker.maps import STATUS_STYLES, WORK_STYLES, WorkMark, point_of
from tracker.places import list_places
from tracker.rollup import app_cache, rollup
from tracker.vocabulary import WORK_STATUSES
from tracker.web.page_cache import public_page
from tracker.web.pages import (
    agency_names,
    based_on,
    cached_map,
    freshness,
    measures_below,
    neighbourhood_row,
    neighbourhoods_map,
    query_work_statuses,
    render_page,
    tree,
)
from tracker.works import latest_works, shown_status, works_by_agency_and_status

bp = Blueprint("home", __name__)

CITY_MAP_WORKS = 1000  # the city map shows the latest works; each place page shows all its own


@bp.get("/")
@public_page
def index():
    """The city: its results, a map of one result by neighbourhood, and the works."""
    session = get_session()
    definitions = tree()
    city_id = definitions.city_id
    if city_id is None:
        return render_page("public/empty.html")
    city = rollup(
        session, place_id=city_id, on=None, cache=app_cache(current_app), tree=definitions
    )
    results = [r for r in city.results if r.takes_part]
    chosen = request.args.get("result") or (results[0].id if results else None)
    if chosen is not None and chosen not in {r.id for r in results}:
        raise NotFound(f"no result {chosen!r}")
    statuses = query_work_statuses(request.args.getlist("status"))
    places = list_places(session)
    neighbourhoods = [p for p in places if p["level"] == "neighbourhood"]
    rows = [neighbourhood_row(definitions, p, chosen) for p in neighbourhoods]
    names = agency_names()
    now = datetime.now(UTC)
    works, works_total = latest_works(session, shown=statuses, now=now, limit=CITY_MAP_WORKS)

    def build():
        return neighbourhoods_map(
            rows,
            works=[
                WorkMark(
                    id=f"{w.agency_id}/{w.ref}",
                    title=w.title,
                    status=shown_status(w, now),
                    agency=names.get(w.agency_id, w.agency_id),
                    geometry=point_of(w.geometry),  # drawn as a point on the city's map
                )
                for w in works
            ],
            label=f"Map of the neighbourhoods by {definitions.nodes[chosen].title}"
            if chosen
            else "Map of the neighbourhoods",
        )

    filters = {
        k.removeprefix("dim."): v for k, v in request.args.items() if k.startswith("dim.") and v
    }
    filtered = (
        rollup(
            session,
            place_id=city_id,
            on=None,
            filters=filters,
            cache=app_cache(current_app),
            tree=definitions,
        )
        if filters
        else None
    )
    rendered = cached_map("city", (chosen, tuple(statuses), now.date()), build)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return render_page(
        "public/city.html",
        city=city,
        results=results,
        chosen=chosen,
        chosen_title=definitions.nodes[chosen].title if chosen else None,
        rows=rows,
        counts=counts,
        statuses=statuses,
        work_statuses=WORK_STATUSES,
        shown_statuses=list(WORK_STYLES),
        works_shown=len(works),
        works_total=works_total,
        works_by_agency=works_by_agency_and_status(session),
        agency_names=names,
        status_styles=STATUS_STYLES,
        work_styles=WORK_STYLES,
        map=rendered,
        based_on=lambda node: based_on(node, definitions, city_id),
        dimensions=_dimension_filters(definitions),
        filters=filters,
        filtered=[m for r in filtered.results for m in measures_below(r)] if filtered else [],
        freshness=freshness,
    )


def _dimension_filters(definitions) -> dict[str, list[str]]:
    return {name: sorted(values) for name, values in sorted(definitions.dimensions.items())}
