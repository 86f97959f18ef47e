"""What every public page shares: the page frame (demo banner, "data as of", map tiles),
the cache of rendered maps, and figures in plain words.

Pages read figures through `tracker.rollup`, exactly as /api/v1 does; the helpers here
only say them in words (a percentage, a status, "based on 3 of 5 measures").
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from flask import Flask, current_app, render_template
from pydantic import TypeAdapter, ValidationError

from tracker.agencies import agency_names as all_agency_names
from tracker.api.schemas import IsoDate
from tracker.charts import plain_number
from tracker.clock import city_timezone, local_time
from tracker.db import get_session
from tracker.demo import has_demo_data
from tracker.errors import TrackerError
from tracker.freshness import last_received
from tracker.maps import STATUS_STYLES, WORK_STYLES, Area, RenderedMap, Tiles, WorkMark, build_map
from tracker.rollup import app_cache, load_definitions, rollup
from tracker.rollup.definitions import TreeDef
from tracker.rollup.figures import Figures
from tracker.web import page_cache


def init_app(app: Flask) -> None:
    page_cache.init_app(app)
    app.jinja_env.filters.update(
        percent=percent,
        whole_percent=whole_percent,
        number=number,
        status_label=status_label,
        work_status_label=lambda status: WORK_STYLES[status].label,
    )


def render_page(template: str, **context: Any) -> str:
    """A public page: `template` with the demo flag, the time data last arrived (in the
    city's time) and the city's timezone added."""
    received = page_cache.per_stamp("last_received", lambda: last_received(get_session()))
    return render_template(
        template,
        demo=page_cache.per_stamp("demo", lambda: has_demo_data(get_session())),
        data_as_of=local_time(received, city_zone()) if received else None,
        **context,
    )


# Facts every page needs, read once per data stamp in each process (page_cache.per_stamp)
# rather than once or more per page.


def tree() -> TreeDef:
    """The tree as the roll-up sees it."""
    return page_cache.per_stamp(
        "tree", lambda: load_definitions(get_session(), app_cache(current_app))
    )


def city_zone() -> str:
    """The city's timezone."""
    return page_cache.per_stamp("timezone", lambda: city_timezone(get_session()))


def agency_names() -> Mapping[str, str]:
    """{agency id: name}, retired agencies included."""
    names = page_cache.per_stamp("agency_names", lambda: all_agency_names(get_session()))
    return MappingProxyType(names)  # shared by every request: read-only


def map_tiles() -> Tiles | None:
    """The configured background tiles, or None when the site draws maps without them."""
    settings = current_app.config["SETTINGS"]
    return Tiles(settings.map_tiles, settings.map_attribution) if settings.map_tiles else None


def cached_map(kind: str, key: tuple, build: Callable[[], RenderedMap]) -> RenderedMap:
    """The map `kind` for `key`, built once per data stamp (any write, tree or place change
    moves it) and served from this process's cache; the page loads its script from
    `map.script_url` (tracker.web.page_cache says how)."""
    return page_cache.cached_map(kind, key, build, map_tiles())


def percent(value: Fraction | float | None) -> str:
    """A share as a whole percentage; "no data" when there is none (never 0 %)."""
    if value is None:
        return "no data"
    return f"{whole_percent(value)}%"


def whole_percent(value: Fraction | float) -> int:
    """A share in whole percent, rounded, but never to 100 short of the whole or to 0
    above nothing: 99.8 % done reads 99 %, not a complete-looking 100 %."""
    shown = round(float(value) * 100)
    if shown >= 100 and value < 1:
        return 99
    if shown <= 0 and value > 0:
        return 1
    return shown


def number(value: float | None, unit: str | None = None) -> str:
    """A value with thousands separators and its unit ("1 school", "2 schools"); "no
    data" when missing."""
    if value is None:
        return "no data"
    text = plain_number(value)
    if unit and value == 1:
        unit = singular(unit)
    return f"{text} {unit}" if unit else text


def singular(unit: str) -> str:
    """The tree's units are plural nouns ("homes", "pump stations", "properties"): the
    last word made singular, for a value of 1. A unit that is not a plural stays."""
    if " of " in unit:  # "km of pipes": the measure is the km
        return unit
    head, _, last = unit.rpartition(" ")
    if last == "people":
        last = "person"
    elif last.endswith("ies") and len(last) > 4:
        last = last[:-3] + "y"
    elif last.endswith(("ches", "shes", "sses", "xes")):
        last = last[:-2]
    elif last.endswith("s") and not last.endswith(("ss", "us", "is")) and len(last) > 3:
        last = last[:-1]
    return f"{head} {last}" if head else last


def status_label(status: str) -> str:
    """A roll-up status in words (the same words as the map's legend and tooltips)."""
    return STATUS_STYLES[status].label


def measures_below(node: Figures) -> Iterator[Figures]:
    """The measure nodes at or below `node` that take part at this place."""
    if node.kind == "measure":
        if node.takes_part:
            yield node
        return
    for child in node.children:
        if child.takes_part:
            yield from measures_below(child)


def based_on(node: Figures, tree: TreeDef, place_id: str) -> str:
    """What a figure rests on, in words: "3 of 5 neighbourhoods reporting" for a measure,
    "based on 3 of 5 measures" for an output or result ("; 1 with no local target")."""
    if node.kind == "measure":
        leaves = tree.leaves_below.get(place_id, frozenset())
        total = len(leaves & set(tree.measures[node.id].places))
        if total <= 1:
            return "reported" if node.measure and node.measure.value is not None else "no data"
        reporting = round(float(node.coverage or 0) * total)
        return f"{reporting} of {total} neighbourhoods reporting"
    measures = list(measures_below(node))
    with_progress = sum(1 for m in measures if m.progress is not None)
    words = f"based on {with_progress} of {len(measures)} measures"
    # A measure with a value but no target here has no progress: say so, or "0 of 2"
    # beside "no data" reads as if nothing had been reported.
    untargeted = sum(1 for m in measures if m.status == "no_target")
    if untargeted:
        words += f"; {untargeted} with no local target"
    return words


def freshness(node: Figures) -> dict[str, Any]:
    """How fresh the figures below `node` are: the latest `as_of` among its measures, and
    how many of the measures that have a value are stale."""
    dated = [m.measure for m in measures_below(node) if m.measure and m.measure.as_of]
    return {
        "as_of": max((m.as_of for m in dated), default=None),
        "stale": sum(1 for m in dated if m.stale),
        "measures": len(dated),
    }


# Whole-city maps of the neighbourhoods (the city page, a result's page).
CITY_SIMPLIFY_DEGREES = 0.0005  # about 50 m: enough for a whole-city view, a third the size


def urban_bounds(places: list[dict]) -> list[float] | None:
    """[west, south, east, north] around most neighbourhoods' centres: the city's few vast
    rural units (Banks Peninsula) would otherwise shrink the built-up city to a corner."""
    centres = sorted((p["label"] for p in places if None not in p["label"]), key=lambda c: c[0])
    if len(centres) < 10:
        return None
    lons = sorted(c[0] for c in centres)
    lats = sorted(c[1] for c in centres)
    cut = len(centres) // 20  # leave out the outermost twentieth on each side
    pad = 0.01
    return [lons[cut] - pad, lats[cut] - pad, lons[-cut - 1] + pad, lats[-cut - 1] + pad]


# --- query parameters ---------------------------------------------------------------------


def query_work_statuses(values: list[str]) -> list[str]:
    """A page's `?status=` filters: statuses as shown (tracker.maps.WORK_STYLES, "unknown"
    included), blanks dropped; an unknown one is a TrackerError (400) naming it."""
    statuses = [s for s in values if s]
    for status in statuses:
        if status not in WORK_STYLES:
            raise TrackerError(
                f"parameter 'status': {status!r} is not one of {', '.join(WORK_STYLES)}"
            )
    return statuses


MAX_REF = 100  # Work.ref's column size: an agency's own id for a work


def query_cursor(value: str | None, *, with_agency: bool = True) -> str | None:
    """A page's `?after=` cursor, as the page's own next links write it: AGENCY/REF (or
    REF alone where the agency is the page's); None when absent or blank. Anything else
    is a TrackerError (400)."""
    if not value:
        return None
    agency, slash, ref = value.partition("/")
    if with_agency and not (slash and agency and ref and len(value) <= 2 * MAX_REF + 1):
        raise TrackerError("parameter 'after' must name a work as AGENCY/REF, as next links do")
    if not with_agency and len(value) > MAX_REF:
        raise TrackerError("parameter 'after' must be a work's id, as next links give it")
    return value


_ISO_DATE = TypeAdapter(IsoDate)


def query_date(text: str | None) -> date | None:
    """A page's `?date=`: None when absent or blank (today), else the day by the same rule
    as /api/v1 (tracker.api.schemas.IsoDate: YYYY-MM-DD within the tracker's calendar);
    a bad one is a TrackerError (400) naming it."""
    if not text:
        return None
    try:
        return _ISO_DATE.validate_python(text)
    except ValidationError as exc:
        message = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
        raise TrackerError(f"parameter 'date': {message}") from None


def neighbourhood_row(
    definitions: TreeDef, place: dict, node_id: str | None, on: date | None = None
) -> dict[str, Any]:
    """One neighbourhood's figures for a node on a day (default today), as the city-wide
    maps and tables show them (the roll-up at that place, cached per data version);
    "no_data" where the node takes no part there."""
    figures = None
    if node_id is not None:
        cache = app_cache(current_app)
        answer = rollup(get_session(), place_id=place["id"], on=on, cache=cache, tree=definitions)
        figures = answer.find(node_id)
        if figures is not None and not figures.takes_part:
            figures = None
    progress = figures.progress if figures else None
    expected = figures.expected if figures else None
    return {
        "id": place["id"],
        "name": place["name"],
        "geometry": place["geometry"],
        "label": place["label"],
        "figures": figures,
        "measured": figures is not None,
        "status": figures.status if figures else "no_data",
        "progress": progress,
        "expected": expected,
        "gap": expected - progress if progress is not None and expected is not None else None,
        "coverage": figures.coverage if figures and progress is not None else None,
        "summary": based_on(figures, definitions, place["id"]) if figures else "not measured here",
    }


def neighbourhoods_map(
    rows: list[dict[str, Any]],
    *,
    label: str,
    summary: Callable[[dict[str, Any]], str] = lambda row: row["summary"],
    works: Sequence[WorkMark] = (),
) -> RenderedMap:
    """The whole city's neighbourhoods coloured by their rows' status (simplified, framed
    on the built-up city), with `works` drawn as points on top."""
    return build_map(
        areas=[
            Area(
                id=row["id"],
                name=row["name"],
                geometry=row["geometry"],
                status=row["status"],
                summary=summary(row),
            )
            for row in rows
        ],
        works=works,
        tiles=map_tiles(),
        bounds=urban_bounds(rows),
        simplify=CITY_SIMPLIFY_DEGREES,
        works_as_points=True,
        label=label,
    )
