"""A result's city-wide page (`/results/ID`) and a measure's (`/measures/ID`)."""

from datetime import date
from fractions import Fraction
from typing import Any

from flask import Blueprint, current_app, redirect, request, url_for

from tracker.charts import Milestone, SeriesPoint, progress_chart, short_date
from tracker.db import get_session
from tracker.errors import NotFound, TrackerError
from tracker.limits import EARLIEST_DATE, LATEST_DATE
from tracker.maps import STATUS_STYLES
from tracker.places import list_places
from tracker.rollup import app_cache, measure_series, rollup
from tracker.rollup.definitions import TreeDef
from tracker.web.comments import comment_rows
from tracker.web.page_cache import public_page
from tracker.web.pages import (
    agency_names,
    based_on,
    cached_map,
    freshness,
    neighbourhood_row,
    neighbourhoods_map,
    number,
    percent,
    query_date,
    render_page,
    tree,
)

bp = Blueprint("results", __name__)

SORTS = ("name", "progress", "gap", "coverage")
ORDERS = ("asc", "desc")
FURTHEST_BEHIND = 10  # how many of the neighbourhoods furthest behind the equity view lists


@bp.get("/results/<node_id>")
@public_page
def result(node_id: str):
    """A result or output across the city: every neighbourhood, leaders and laggards."""
    definitions = tree()
    node = definitions.nodes.get(node_id)
    if node is None:
        raise NotFound(f"no result or output {node_id!r}")
    if node.kind == "measure":
        return redirect(url_for("results.measure", node_id=node_id))
    sort = request.args.get("sort", "name")
    order = request.args.get("order", "asc")
    if sort not in SORTS:
        raise TrackerError(f"sort must be one of {', '.join(SORTS)}")
    if order not in ORDERS:
        raise TrackerError("order must be asc or desc")
    on = query_date(request.args.get("date"))
    session = get_session()
    city_id = definitions.city_id
    if city_id is None:
        raise NotFound(f"no result or output {node_id!r}")
    here = rollup(session, place_id=city_id, on=on, cache=app_cache(current_app), tree=definitions)
    city = here.find(node_id)
    neighbourhoods = [p for p in list_places(session) if p["level"] == "neighbourhood"]
    rows = [
        neighbourhood_row(definitions, place, node_id, on=here.date) for place in neighbourhoods
    ]

    def build():
        return neighbourhoods_map(
            rows, summary=_map_summary, label=f"Map of the neighbourhoods by {node.title}"
        )

    rendered = cached_map("result", (node_id, here.date), build)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return render_page(
        "public/result.html",
        node=node,
        city=city,
        city_name=definitions.places[city_id].name,
        trail=_trail(definitions, node_id),
        children=[c for c in city.children if c.takes_part] if city else [],
        rows=sort_rows(rows, sort, order),
        sort=sort,
        order=order,
        equity=equity(rows),
        counts=counts,
        status_styles=STATUS_STYLES,
        map=rendered,
        based_on=lambda figures: based_on(figures, definitions, city_id),
        freshness=freshness,
        explain_url=url_for("api.get_explain", node=node_id, place=city_id, date=here.date),
        day_shown=here.date,
        date_asked=on,
        calendar=(EARLIEST_DATE, LATEST_DATE),
    )


def _map_summary(row: dict[str, Any]) -> str:
    """A neighbourhood's figures in a map tooltip, as its row in the table says them."""
    if row["progress"] is None:
        return row["summary"]
    return f"{percent(row['progress'])} done, {percent(row['expected'])} expected; {row['summary']}"


def sort_rows(rows: list[dict], sort: str, order: str) -> list[dict]:
    """Rows by name, or by a figure with the rows that have none after the others in either
    order (no data is never ranked, and never read as zero)."""
    by_name = sorted(rows, key=lambda r: r["name"].casefold())
    if sort == "name":
        return by_name[::-1] if order == "desc" else by_name
    ranked = [r for r in by_name if r[sort] is not None]
    ranked.sort(key=lambda r: r[sort], reverse=order == "desc")
    return ranked + [r for r in by_name if r[sort] is None]


def equity(rows: list[dict]) -> dict[str, Any]:
    """Leaders and laggards among the neighbourhoods with progress: the best and worst, the
    mean progress of the top and bottom quarters and the gap between them, and the ones
    furthest behind their trajectory (largest expected − progress, behind only). The
    neighbourhoods without progress are listed apart, never ranked."""
    ranked = sorted(
        (r for r in rows if r["progress"] is not None),
        key=lambda r: (-r["progress"], r["name"].casefold()),
    )
    quarter = max(1, len(ranked) // 4)
    top = ranked[:quarter]
    bottom = ranked[-quarter:]

    def mean(items: list[dict]) -> Fraction | None:
        return sum((r["progress"] for r in items), Fraction(0)) / len(items) if items else None

    behind = sorted(
        (r for r in ranked if r["gap"] is not None and r["gap"] > 0),
        key=lambda r: (-r["gap"], r["name"].casefold()),
    )
    return {
        "ranked": len(ranked),
        "best": ranked[0] if ranked else None,
        "worst": ranked[-1] if ranked else None,
        "quarter": quarter,
        "top_mean": mean(top),
        "bottom_mean": mean(bottom),
        "spread": mean(top) - mean(bottom) if len(ranked) > 1 else None,
        "behind": behind[:FURTHEST_BEHIND],
        "behind_total": len(behind),
        "no_data": sorted(
            (r for r in rows if r["measured"] and r["progress"] is None),
            key=lambda r: r["name"].casefold(),
        ),
        "not_measured": sum(1 for r in rows if not r["measured"]),
    }


def _parents(definitions: TreeDef) -> dict[str, str]:
    """{node id: its parent's id} over the whole tree."""
    return {child: node.id for node in definitions.nodes.values() for child in node.children}


def _trail(definitions: TreeDef, node_id: str) -> list[Any]:
    """The node's ancestors, root first (for the breadcrumbs)."""
    parents = _parents(definitions)
    trail = []
    while node_id in parents:
        node_id = parents[node_id]
        trail.append(definitions.nodes[node_id])
    return trail[::-1]


@bp.get("/measures/<node_id>")
@public_page
def measure(node_id: str):
    """A measure over time against its trajectory, by place and by dimension."""
    definitions = tree()
    node = definitions.nodes.get(node_id)
    if node is None:
        raise NotFound(f"no measure {node_id!r}")
    if node.kind != "measure":
        return redirect(url_for("results.result", node_id=node_id))
    session = get_session()
    cache = app_cache(current_app)
    place_id = request.args.get("place") or definitions.city_id
    if place_id not in definitions.places:
        raise NotFound(f"no place {place_id!r}")
    place = definitions.places[place_id]
    spec = definitions.measures[node_id]
    here = rollup(session, place_id=place_id, cache=cache, tree=definitions).find(node_id)
    series = measure_series(session, measure_id=node_id, place_id=place_id, cache=cache)
    unit = spec.unit
    leaves = sorted(definitions.leaves_below.get(place_id, frozenset()) & spec.places.keys())
    per_place = []
    for leaf in leaves:
        figures = rollup(session, place_id=leaf, cache=cache, tree=definitions).find(node_id)
        per_place.append({"id": leaf, "name": definitions.places[leaf].name, "figures": figures})
    per_place.sort(key=lambda r: r["name"].casefold())
    breakdowns = []
    for name in spec.dimensions:
        values = []
        for value in sorted(definitions.dimensions.get(name, ())):
            filters = {name: value}
            answer = rollup(
                session, place_id=place_id, filters=filters, cache=cache, tree=definitions
            )
            figures = answer.find(node_id)
            values.append((value, figures.measure if figures and figures.takes_part else None))
        breakdowns.append({"name": name, "values": values})
    trail = _trail(definitions, node_id)
    agency_id = next((n.agency_id for n in [node, *trail[::-1]] if n.agency_id is not None), None)
    values = here.measure if here is not None and here.takes_part else None
    chart = progress_chart(
        chart_id="measure-chart",
        title=f"{node.title} in {place.name}: actual against expected",
        description=_chart_description(series, values, unit),
        points=[
            SeriesPoint(date.fromisoformat(p["date"]), p["value"], p["expected"]) for p in series
        ],
        milestones=_milestones(spec, values),
        forecast=values.forecast if values else None,
        target=values.target if values else None,
        value_label=unit or "value",
        fmt=lambda v: number(v),
    )
    places = [p for p in definitions.places.values() if p.level in ("city", "area")]
    places.sort(key=lambda p: (p.level != "city", p.name.casefold()))
    choices = places + [definitions.places[leaf] for leaf in sorted(spec.places)]
    if place not in choices:
        choices.append(place)  # a place the measure does not cover, asked for by address
    return render_page(
        "public/measure.html",
        node=node,
        comments=comment_rows(session, measure_id=node_id),
        spec=spec,
        place=place,
        is_city=place_id == definitions.city_id,
        city_name=definitions.places[definitions.city_id].name if definitions.city_id else None,
        here=here if here is not None and here.takes_part else None,
        values=values,
        series=[p | {"day": date.fromisoformat(p["date"])} for p in series],
        chart=chart,
        per_place=per_place,
        breakdowns=breakdowns,
        trail=trail,
        agency_id=agency_id,
        agency_name=agency_names().get(agency_id, agency_id) if agency_id else None,
        choices=choices,
        based_on=based_on(here, definitions, place_id) if here and here.takes_part else "no data",
        explain_url=url_for("api.get_explain", node=node_id, place=place_id),
        series_url=url_for("api.get_series", measure_id=node_id, place=place_id),
        milestones=spec.milestones,
    )


def _milestones(spec, values) -> list[Milestone]:
    """The measure's milestones in its unit at this place (B + p·(T − B)), when it has a
    baseline and target here; otherwise none can be drawn."""
    if values is None or values.baseline is None or values.target is None:
        return []
    b, t = values.baseline, values.target
    return [
        Milestone(day, b + share * (t - b), f"Milestone: {percent(share)} by {short_date(day)}")
        for day, share in spec.milestones
    ]


def _chart_description(series: list[dict], values, unit: str | None) -> str:
    """The chart in one sentence: from when to when, the latest value and the plan."""
    if not series:
        return "No values reported yet."
    first, last = series[0], series[-1]
    words = (
        f"{len(series)} reported dates from {short_date(date.fromisoformat(first['date']))} "
        f"to {short_date(date.fromisoformat(last['date']))}; latest value "
        f"{number(last['value'], unit)}"
    )
    if last["expected"] is not None:
        words += f" against {number(last['expected'], unit)} expected by then"
    if values is not None and values.target is not None:
        words += f"; target {number(values.target, unit)}"
    if values is not None and values.forecast is not None:
        words += f"; forecast to reach it on {short_date(values.forecast)}"
    return words + ". The table below lists the same figures."
