"""Roll-up: what every figure means (CONTRACT §3), computed in SQL and cached per data version.

The database does the heavy part: for each (measure, place, dimension cell) the latest few
observations dated on or before the day asked about (a window function), and for flow
measures the sums over [start, day] (GROUP BY). Python then combines these small
per-(measure, neighbourhood) results into areas, the city, outputs and results.

Caching. Every write bumps `Node.data_version` of the measures it changes, and loading the
tree bumps both it and `Node.definition_version` of the nodes whose definition changed.
Each request reads every node's two versions in one query and keys everything by them, so
a warm request computes nothing, a write to a few measures recomputes only those measures
(and re-reads no definition), and app processes sharing one database never serve each
other's stale figures. The cache lives in the process
(`RollupCache`, bounded LRUs), one per app.

Progress, expected progress and the status bands are computed with exact fractions, so a
figure exactly on a band's edge always falls on the same side.
"""

import calendar
import math
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from fractions import Fraction
from itertools import pairwise
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    extract,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session

from tracker.clock import city_timezone, today_in, utc_iso
from tracker.errors import NotFound, TrackerError
from tracker.limits import MAX_MAGNITUDE
from tracker.models import (
    Agency,
    Batch,
    Dimension,
    MeasurePlace,
    Node,
    Observation,
    Place,
    Work,
    WorkPlace,
)
from tracker.submissions import dims_key

HISTORY = 6  # observation dates a forecast looks back over (rule 9)
MAX_UNION = 400  # SELECTs per UNION ALL (SQLite allows 500)
ON_TRACK_BAND = Fraction(1, 20)
AT_RISK_BAND = Fraction(3, 20)
FREQUENCY_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}

Filters = tuple[tuple[str, str], ...]  # sorted (dimension, value) pairs; () for none
# Values outside ±MAX_MAGNITUDE are refused on the way in, but rows stored before that
# rule may hold them: the roll-up leaves such a neighbourhood out (it lowers coverage)
# and says so, rather than letting one sum overflow every figure of the tree.
UNUSABLE = (
    f"a stored value is outside ±{MAX_MAGNITUDE:.0e}; this neighbourhood's figure cannot be "
    "computed until the agency sends a new value"
)


# --- the cache --------------------------------------------------------------------------


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value stored under `key`, or None."""
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Any) -> None:
        """Store `value`, dropping the least recently used entry when full."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class RollupCache:
    """Figures already computed, keyed by the data versions they were computed from."""

    def __init__(self, answers: int = 512, measures: int = 2048):
        self.definitions = LRU(4)  # trees, by every node's definition version
        self.trees = LRU(4)  # the same with each measure's data version, by both versions
        self.places = LRU(4096)  # a measure's places, baselines and targets, by definition
        self.leaves = LRU(measures)  # a measure's neighbourhood values for a day and filter
        self.figures = LRU(8 * measures)  # a measure's figures at a place, day and filter
        self.answers = LRU(answers)  # whole roll-ups, by place, day, filter and versions


def app_cache(app: Any) -> RollupCache:
    """The roll-up cache of a Flask app (one per app, created on first use)."""
    return app.extensions.setdefault("rollup_cache", RollupCache())


# --- definitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlaceInfo:
    """A place of the place tree (no geometry: the roll-up does not need it)."""

    id: str
    name: str
    level: str
    parent_id: str | None

    def to_json(self) -> dict[str, Any]:
        """The place as CONTRACT §4 shows it."""
        return {"id": self.id, "name": self.name, "level": self.level, "parent": self.parent_id}


@dataclass(frozen=True)
class MeasureDef:
    """A measure as the tree defines it, with its neighbourhoods' (baseline, target)."""

    id: str
    title: str
    unit: str | None
    kind: str  # cumulative | level | flow
    aggregate: str  # sum | mean | min | max
    frequency: str
    start: date
    due: date
    milestones: tuple[tuple[date, float], ...]
    dimensions: tuple[str, ...]
    city_baseline: float | None
    city_target: float | None
    version: int
    places: Mapping[str, tuple[float | None, float | None]]
    from_works: bool = False  # `source: works`: derived from completed works (CONTRACT §6)


@dataclass(frozen=True)
class NodeDef:
    """A result, output or measure with its children's ids, in tree order."""

    id: str
    kind: str  # result | output | measure
    title: str
    weight: float
    agency_id: str | None
    children: tuple[str, ...]


@dataclass(frozen=True)
class TreeDef:
    """Everything the roll-up needs to know besides observations; immutable once built."""

    key: tuple
    nodes: Mapping[str, NodeDef]
    roots: tuple[str, ...]
    measures: Mapping[str, MeasureDef]
    places: Mapping[str, PlaceInfo]
    leaves_below: Mapping[str, frozenset[str]]
    city_id: str | None
    timezone: str
    dimensions: Mapping[str, frozenset[str]]

    def today(self) -> date:
        """Today in the city's timezone."""
        return today_in(self.timezone)


def load_tree(session: Session, cache: RollupCache | None = None) -> TreeDef:
    """The current definitions: one cheap query when nothing changed since the last call.

    After a write only data versions move: the definitions are reused and the written
    measures just carry their new version, so no node or place is read again.
    """
    cache = cache or RollupCache()
    key = tuple(
        map(
            tuple,
            session.execute(
                select(Node.id, Node.definition_version, Node.data_version).order_by(Node.id)
            ),
        )
    )
    tree = cache.trees.get(key)
    if tree is None:
        definitions = tuple((node_id, version) for node_id, version, _ in key)
        built = cache.definitions.get(definitions)
        if built is None:
            built = _build_tree(session, cache, definitions)
            cache.definitions.put(definitions, built)
        tree = _with_data_versions(built, key)
        cache.trees.put(key, tree)
    return tree


def _with_data_versions(tree: TreeDef, key: tuple) -> TreeDef:
    """`tree` with each measure's version set to its data version in `key`."""
    versions = {node_id: data_version for node_id, _, data_version in key}
    measures = {
        measure_id: measure
        if measure.version == versions[measure_id]
        else replace(measure, version=versions[measure_id])
        for measure_id, measure in tree.measures.items()
    }
    return replace(tree, key=key, measures=measures)


def _build_tree(session: Session, cache: RollupCache, key: tuple) -> TreeDef:
    """Read nodes, places and dimensions; measure places only for measures that changed."""
    rows = session.scalars(select(Node).where(Node.retired_at.is_(None))).all()
    children: dict[str | None, list[Node]] = defaultdict(list)
    for row in rows:
        children[row.parent_id].append(row)
    # Sub-results come before outputs at equal positions (the tree counts them in that order).
    for siblings in children.values():
        siblings.sort(key=lambda n: (n.position, n.kind != "result", n.id))
    nodes = {
        row.id: NodeDef(
            row.id,
            row.kind,
            row.title,
            row.weight,
            row.agency_id,
            tuple(c.id for c in children[row.id]),
        )
        for row in rows
    }
    measure_rows = [row for row in rows if row.kind == "measure"]
    measures = {
        row.id: _measure_def(row, places)
        for row, places in zip(
            measure_rows, _measure_places(session, cache, measure_rows), strict=True
        )
    }
    places = {
        p.id: PlaceInfo(p.id, p.name, p.level, p.parent_id)
        for p in session.execute(
            select(Place.id, Place.name, Place.level, Place.parent_id).where(
                Place.retired_at.is_(None)  # a place the boundaries dropped is gone (404)
            )
        )
    }
    city = next((p for p in places.values() if p.level == "city"), None)
    dimensions: dict[str, set[str]] = defaultdict(set)
    for name, value in session.execute(select(Dimension.name, Dimension.value)):
        dimensions[name].add(value)
    return TreeDef(
        key=key,
        nodes=nodes,
        roots=tuple(n.id for n in children[None] if n.kind == "result"),
        measures=measures,
        places=places,
        leaves_below=_leaves_below(places),
        city_id=city.id if city else None,
        timezone=city_timezone(session),
        dimensions={name: frozenset(values) for name, values in dimensions.items()},
    )


def _measure_places(
    session: Session, cache: RollupCache, rows: list[Node]
) -> list[dict[str, tuple[float | None, float | None]]]:
    """Each measure's {place: (baseline, target)}, read only for measures not cached."""
    found = {row.id: cache.places.get((row.id, row.definition_version)) for row in rows}
    missing = [row.id for row in rows if found[row.id] is None]
    if missing:
        fresh: dict[str, dict] = {measure_id: {} for measure_id in missing}
        for measure_id, place_id, baseline, target in session.execute(
            select(
                MeasurePlace.measure_id,
                MeasurePlace.place_id,
                MeasurePlace.baseline,
                MeasurePlace.target,
            ).where(MeasurePlace.measure_id.in_(missing))
        ):
            fresh[measure_id][place_id] = (baseline, target)
        for row in rows:
            if row.id in fresh:
                found[row.id] = fresh[row.id]
                cache.places.put((row.id, row.definition_version), fresh[row.id])
    return [found[row.id] for row in rows]


def _measure_def(row: Node, places: dict) -> MeasureDef:
    """A measure's definition from its Node row and its places."""
    milestones = sorted(
        (date.fromisoformat(m["date"]), float(m["progress"])) for m in row.milestones or []
    )
    return MeasureDef(
        id=row.id,
        title=row.title,
        unit=row.unit,
        kind=row.measure_kind,
        aggregate=row.aggregate,
        frequency=row.frequency,
        start=row.start,
        due=row.due,
        milestones=tuple(milestones),
        dimensions=tuple(row.dimensions or ()),
        city_baseline=row.city_baseline,
        city_target=row.city_target,
        version=row.data_version,
        places=places,
        from_works=row.source == "works",
    )


def _leaves_below(places: Mapping[str, PlaceInfo]) -> dict[str, frozenset[str]]:
    """For every place, the neighbourhoods at or below it."""
    below: dict[str, set[str]] = defaultdict(set)
    for place in places.values():
        if place.level != "neighbourhood":
            continue
        current: str | None = place.id
        while current is not None and current in places:
            below[current].add(place.id)
            current = places[current].parent_id
    return {p: frozenset(below[p]) for p in places}


def parse_filters(tree: TreeDef, raw: Mapping[str, str]) -> Filters:
    """`{"age": "65+"}` checked against the declared dimensions; unknown ones are a 400."""
    for name, value in raw.items():
        if name not in tree.dimensions:
            known = ", ".join(sorted(tree.dimensions)) or "none"
            raise TrackerError(f"unknown dimension {name!r} (declared: {known})")
        if value not in tree.dimensions[name]:
            values = ", ".join(sorted(tree.dimensions[name]))
            raise TrackerError(f"{value!r} is not a value of dimension {name!r} ({values})")
    return tuple(sorted(raw.items()))


# --- the rules, on plain numbers ------------------------------------------------------------


def expected_progress(
    start: date, due: date, milestones: Iterable[tuple[date, float]], on: date
) -> Fraction:
    """Rule 5: piecewise linear in days through (start, 0), the milestones and (due, 1)."""
    if on < start:
        return Fraction(0)
    if on >= due:
        return Fraction(1)
    points = [(start, Fraction(0)), *((d, Fraction(p)) for d, p in milestones), (due, Fraction(1))]
    for (x0, p0), (x1, p1) in pairwise(points):
        if x0 <= on < x1:
            return p0 + (p1 - p0) * Fraction((on - x0).days, (x1 - x0).days)
    return Fraction(1)


def progress(value: float | None, baseline: float | None, target: float | None) -> Fraction | None:
    """Rule 4: clamp((V − B) / (T − B), 0, 1); when T = B, 1 if V = T else 0."""
    if value is None or baseline is None or target is None:
        return None
    v, b, t = Fraction(value), Fraction(baseline), Fraction(target)
    if t == b:
        return Fraction(1 if v == t else 0)
    return min(max((v - b) / (t - b), Fraction(0)), Fraction(1))


def status(p: Fraction | None, e: Fraction | None, *, value_without_target: bool = False) -> str:
    """Rule 7, comparing exact values."""
    if p is None:
        return "no_target" if value_without_target else "no_data"
    if p >= 1:
        return "complete"
    if e is None:
        return "no_data"
    if p >= e - ON_TRACK_BAND:
        return "on_track"
    if p >= e - AT_RISK_BAND:
        return "at_risk"
    return "off_track"


def months_before(day: date, months: int) -> date:
    """The same day `months` calendar months earlier (the month's last day if shorter)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def stale_before(on: date, frequency: str) -> date:
    """Rule 8: an observation dated before this day is stale on `on` (twice the frequency)."""
    try:
        if frequency == "weekly":
            return on - timedelta(days=14)
        return months_before(on, 2 * FREQUENCY_MONTHS[frequency])
    except (OverflowError, ValueError):
        return date.min  # `on` is in the first weeks of year 1: nothing can be older


def forecast(
    points: Iterable[tuple[date, float]],
    *,
    value: float | None,
    target: float | None,
    progress_now: Fraction | None,
) -> date | None:
    """Rule 9: the first whole day on or after the least-squares line reaches the target."""
    points = sorted(points)[-HISTORY:]
    if len(points) < 3 or progress_now is None or progress_now >= 1:
        return None
    if value is None or target is None:
        return None
    origin = points[0][0]
    xs = [Fraction((d - origin).days) for d, _ in points]
    ys = [Fraction(v) for _, v in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    gap = Fraction(target) - Fraction(value)
    if slope == 0 or (slope > 0) != (gap > 0):
        return None
    reach = mean_x + (Fraction(target) - mean_y) / slope
    try:
        return origin + timedelta(days=math.ceil(reach))
    except OverflowError:
        return None  # the line reaches the target outside the calendar (years 1–9999)


def aggregate(how: str, values: list[float]) -> float | None:
    """A measure's `aggregate` over places' values; None over no values."""
    if not values:
        return None
    if how == "sum":
        return math.fsum(values)
    if how == "mean":
        return math.fsum(values) / len(values)
    return min(values) if how == "min" else max(values)


# --- neighbourhood values, from SQL ---------------------------------------------------------


@dataclass(frozen=True)
class LeafFacts:
    """A measure at one neighbourhood on one day: its value and what it rests on."""

    value: float
    as_of: date  # the latest observation date among the values used
    # (date, value) at the neighbourhood's last observation dates, newest first; empty in
    # filtered views (they have no forecast)
    history: tuple[tuple[date, float], ...] = ()


Cells = dict[str, list[tuple[date, float]]]  # dims_key → (date, value), newest first


def leaf_facts(
    session: Session,
    cache: RollupCache,
    tree: TreeDef,
    measures: Iterable[MeasureDef],
    on: date,
    filters: Filters = (),
) -> dict[str, dict[str, LeafFacts]]:
    """{measure: {neighbourhood: facts}} for neighbourhoods with a value; SQL only for misses."""
    found: dict[str, dict[str, LeafFacts]] = {}
    missing: list[MeasureDef] = []
    for measure in measures:
        hit = cache.leaves.get((measure.id, measure.version, on, filters))
        if hit is None:
            missing.append(measure)
        else:
            found[measure.id] = hit
    if missing:
        reported = [m for m in missing if not m.from_works]
        cells, totals = _query_cells(session, reported, on, tree.dimensions)
        derived = [m for m in missing if m.from_works]
        if derived:
            works_cells, works_totals = _works_cells(session, derived, on)
            cells.update(works_cells)
            totals.update(works_totals)
        for measure in missing:
            # Works add up like a flow: the value is the running total of completions.
            kind = "flow" if measure.from_works else measure.kind
            facts = {
                place: fact
                for place, leaf_cells in cells.get(measure.id, {}).items()
                if place in measure.places
                and (fact := _facts(kind, leaf_cells, totals, measure.id, place, filters))
            }
            cache.leaves.put((measure.id, measure.version, on, filters), facts)
            found[measure.id] = facts
    return found


def _query_cells(
    session: Session, measures: list[MeasureDef], on: date, dimensions: Mapping[str, frozenset]
) -> tuple[dict[str, dict[str, Cells]], dict[tuple[str, str, str], float]]:
    """The last HISTORY observations of every cell dated ≤ on, and flow sums over [start, on].

    Retracted observations (value null) are left out, so the previous value shows.
    """
    cells: dict[str, dict[str, Cells]] = defaultdict(lambda: defaultdict(dict))
    totals: dict[tuple[str, str, str], float] = {}
    if not measures:
        return cells, totals
    # Core execution, fetched at once: the roll-up's largest results, row by row through
    # the ORM, cost as much as the queries.
    connection = session.connection()
    for chunk in _chunks(measures, dimensions):
        for measure_id, place_id, key, day, value in connection.execute(
            _latest(session, chunk, on)
        ).all():
            cells[measure_id][place_id].setdefault(key, []).append((day, value))
    flows = [m for m in measures if m.kind == "flow"]
    for chunk in _chunks(flows, dimensions):
        for measure_id, place_id, key, total in connection.execute(_flow_totals(chunk, on)).all():
            if total is not None:
                totals[(measure_id, place_id, key)] = total
    return cells, totals


def _counted_works(measure_ids: list[str], on: date):
    """One row per (completed work, neighbourhood it counts in), with what it adds there
    (CONTRACT §6): the one place the rule is written, for the figures and their trail.

    A work with a quantity adds it split by its shares of length or area; one without adds
    1 to the neighbourhood holding its largest share.
    """
    amount = case(
        (Work.quantity.is_not(None), Work.quantity * WorkPlace.share), else_=literal(1.0, Float)
    )
    return (
        select(
            Work.measure_id,
            WorkPlace.place_id,
            Work.actual_end.label("day"),
            WorkPlace.share,
            amount.label("amount"),
            Work.id.label("work_id"),
        )
        .join(WorkPlace, WorkPlace.work_id == Work.id)
        .where(
            Work.measure_id.in_(measure_ids),
            Work.status == "complete",
            Work.actual_end <= on,
            or_(Work.quantity.is_not(None), WorkPlace.place_id == Work.main_place_id),
        )
    )


def _works_completed(measure_ids: list[str], on: date):
    """(measure, place, day, amount) of completed works, summed per day."""
    parts = _counted_works(measure_ids, on).subquery("counted")
    return (
        select(
            parts.c.measure_id, parts.c.place_id, parts.c.day, func.sum(_guarded(parts.c.amount))
        )
        .group_by(parts.c.measure_id, parts.c.place_id, parts.c.day)
        .order_by(parts.c.measure_id, parts.c.place_id, parts.c.day.desc())
    )


def _works_cells(
    session: Session, measures: list[MeasureDef], on: date
) -> tuple[dict[str, dict[str, Cells]], dict[tuple[str, str, str], float]]:
    """Works-derived measures in the shape of flow cells: the last HISTORY completion days
    of each neighbourhood with the amount completed on each, and the total to `on`."""
    cells: dict[str, dict[str, Cells]] = defaultdict(lambda: defaultdict(dict))
    totals: dict[tuple[str, str, str], float] = defaultdict(float)
    for measure_id, place_id, day, amount in session.execute(
        _works_completed([m.id for m in measures], on)
    ):
        totals[(measure_id, place_id, "")] += amount
        days = cells[measure_id][place_id].setdefault("", [])
        if len(days) < HISTORY:
            days.append((day, amount))
    return cells, totals


def _latest(session: Session, series: list[tuple[MeasureDef, str]], on: date):
    """The last HISTORY rows dated ≤ on of each (measure, dims_key) series at its places.

    Driven by the list of series, each read by an index seek on uq_observation (measure,
    place, dims_key, date), so the cost follows the number of series, not the length of
    their history. PostgreSQL takes each series' top rows with LATERAL … LIMIT; SQLite,
    which has no LATERAL, finds each series' HISTORY-th latest date and joins from there.
    """
    groups = _series(series)
    obs = aliased(Observation)
    in_series = and_(
        obs.measure_id == groups.c.measure_id,
        obs.place_id == groups.c.place_id,
        obs.dims_key == groups.c.dims_key,
        obs.date <= on,
        obs.date >= groups.c.floor,
        obs.value.is_not(None),
    )
    order = (groups.c.measure_id, groups.c.place_id, groups.c.dims_key)
    if session.get_bind().dialect.name == "postgresql":
        top = (
            select(obs.date, obs.value)
            .where(in_series)
            .order_by(obs.date.desc())
            .limit(HISTORY)
            .lateral("top")
        )
        return (
            select(*order, top.c.date, top.c.value)
            .select_from(groups)
            .join(top, true())
            .order_by(*order, top.c.date.desc())
        )
    cutoff = (
        select(obs.date)
        .where(in_series)
        .order_by(obs.date.desc())
        .limit(1)
        .offset(HISTORY - 1)
        .scalar_subquery()
    )
    bounds = select(*order, func.coalesce(cutoff, groups.c.floor).label("since")).subquery()
    rows = Observation
    return (
        select(rows.measure_id, rows.place_id, rows.dims_key, rows.date, rows.value)
        .select_from(bounds)
        .join(
            rows,
            and_(
                rows.measure_id == bounds.c.measure_id,
                rows.place_id == bounds.c.place_id,
                rows.dims_key == bounds.c.dims_key,
                rows.date >= bounds.c.since,
            ),
        )
        .where(rows.date <= on, rows.value.is_not(None))
        .order_by(rows.measure_id, rows.place_id, rows.dims_key, rows.date.desc())
    )


def _series(series: list[tuple[MeasureDef, str]]):
    """One row per (measure, place, dims_key) series, with the first date that counts
    (a flow's start)."""
    mp = MeasurePlace
    return union_all(
        *(
            select(
                mp.measure_id,
                mp.place_id,
                literal(key, String).label("dims_key"),
                literal(m.start if m.kind == "flow" else date.min, Date).label("floor"),
            ).where(mp.measure_id == m.id)
            for m, key in series
        )
    ).subquery("series")


def _flow_totals(series: list[tuple[MeasureDef, str]], on: date):
    """Each flow series' sum over [start, on] (null when it has none), summed by a range
    seek per series in uq_observation, like `_latest`: one GROUP BY over every flow row
    sorted them all by text first, which took most of a roll-up on PostgreSQL."""
    groups = _series(series)
    obs = aliased(Observation)
    total = (
        select(func.sum(_guarded(obs.value)))
        .where(
            obs.measure_id == groups.c.measure_id,
            obs.place_id == groups.c.place_id,
            obs.dims_key == groups.c.dims_key,
            obs.date >= groups.c.floor,
            obs.date <= on,
        )
        .scalar_subquery()
    )
    return select(groups.c.measure_id, groups.c.place_id, groups.c.dims_key, total)


def _guarded(value):
    """`value` for a SUM that cannot overflow: one outside ±MAX_MAGNITUDE counts as
    infinity (PostgreSQL raises an error on an overflowing SUM; SQLite returns infinity),
    so the sum comes back non-finite and the figure is marked unusable."""
    return case((func.abs(value) > MAX_MAGNITUDE, literal(math.inf, Float)), else_=value)


def _chunks(
    measures: list[MeasureDef], dimensions: Mapping[str, frozenset]
) -> Iterable[list[tuple[MeasureDef, str]]]:
    """(measure, dims_key) of every series, in chunks small enough for one UNION ALL.

    A measure with dimensions has one series per combination of declared values.
    """
    series = [(m, key) for m in measures for key in _cell_keys(m, dimensions)]
    for first in range(0, len(series), MAX_UNION):
        yield series[first : first + MAX_UNION]


def _cell_keys(measure: MeasureDef, dimensions: Mapping[str, frozenset]) -> list[str]:
    """Every dims_key a measure's observations can have ("" without dimensions)."""
    keys = [{}]
    for name in measure.dimensions:
        keys = [k | {name: value} for k in keys for value in sorted(dimensions.get(name, ()))]
    return [dims_key(k) for k in keys]


def _in_window(measures: list[MeasureDef], on: date):
    """Observations that count on `on`: dated ≤ on, not retracted, flows from their start."""
    obs = Observation
    levels = [m.id for m in measures if m.kind != "flow"]
    parts = [obs.measure_id.in_(levels)] if levels else []
    parts += [
        and_(obs.measure_id == m.id, obs.date >= m.start) for m in measures if m.kind == "flow"
    ]
    return and_(obs.date <= on, obs.value.is_not(None), or_(*parts))


def _facts(
    kind: str,
    cells: Cells,
    totals: Mapping[tuple[str, str, str], float],
    measure_id: str,
    place_id: str,
    filters: Filters,
) -> LeafFacts | None:
    """A neighbourhood's value (rules 1, 2 and the filter rule) from its cells' rows."""
    cell_totals = {key: totals.get((measure_id, place_id, key), 0.0) for key in cells}
    if not _usable(cells, cell_totals):
        return LeafFacts(math.nan, max(rows[0][0] for rows in cells.values()))
    if filters:
        wanted = dict(filters)
        matching = {k: rows for k, rows in cells.items() if _matches(k, wanted)}
        # A neighbourhood that reported other cells in the window counts 0 for this filter.
        used = matching or cells
        as_of = max(rows[0][0] for rows in used.values())
        value = _value_at(kind, matching, cell_totals, None) if matching else 0.0
        return LeafFacts(value, as_of)
    history = _history(kind, cells, cell_totals)
    return LeafFacts(history[0][1], history[0][0], history) if history else None


def _usable(cells: Cells, totals: Mapping[str, float]) -> bool:
    """Whether every row and sum a neighbourhood's figure rests on is inside the bounds."""
    return all(math.isfinite(total) for total in totals.values()) and all(
        abs(value) <= MAX_MAGNITUDE for rows in cells.values() for _, value in rows
    )


def _history(
    kind: str, cells: Cells, totals: Mapping[str, float]
) -> tuple[tuple[date, float], ...]:
    """(date, value) at the last HISTORY dates any cell reported, newest first."""
    if len(cells) == 1:
        ((key, rows),) = cells.items()
        return _one_cell_history(kind, rows, totals[key])
    dates = sorted({day for rows in cells.values() for day, _ in rows}, reverse=True)[:HISTORY]
    return tuple((day, _value_at(kind, cells, totals, day)) for day in dates)


def _one_cell_history(
    kind: str, rows: list[tuple[date, float]], total: float
) -> tuple[tuple[date, float], ...]:
    """`_history` of a lone cell (a measure without dimensions, the common case), without
    re-scanning the cell for each date: its rows, newest first and one per date, are the
    history, with the values _value_at gives them."""
    rows = rows[:HISTORY]
    if kind != "flow":
        return tuple(rows)
    history, later = [], []  # a flow on a date: its total less what came after
    for day, value in rows:
        history.append((day, total - math.fsum(later)))
        later.append(value)
    return tuple(history)


def _value_at(kind: str, cells: Cells, totals: Mapping[str, float], day: date | None) -> float:
    """The sum over cells of each cell's value on `day` (None: the latest)."""
    parts = []
    for key, rows in cells.items():
        if kind == "flow":
            later = [value for d, value in rows if day is not None and d > day]
            parts.append(totals[key] - math.fsum(later))
        else:
            current = next((value for d, value in rows if day is None or d <= day), None)
            if current is not None:
                parts.append(current)
    return math.fsum(parts)


def _matches(key: str, wanted: Mapping[str, str]) -> bool:
    """Whether a cell's dims_key ("age=65+|sex=female") has every wanted value."""
    cell = dict(part.partition("=")[::2] for part in key.split("|") if part)
    return all(cell.get(name) == value for name, value in wanted.items())


# --- figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureValues:
    """The figures a measure node adds (CONTRACT §4)."""

    value: float | None
    target: float | None
    baseline: float | None
    unit: str | None
    as_of: date | None
    stale: bool | None
    forecast: date | None
    problem: str | None = None  # why some neighbourhoods' values cannot be used


@dataclass(frozen=True)
class Figures:
    """One node of the roll-up at one place on one day."""

    id: str
    kind: str
    title: str
    weight: float
    progress: Fraction | None
    expected: Fraction | None
    status: str
    coverage: Fraction | None
    takes_part: bool  # a measure covering a neighbourhood here, or a node above one
    children: tuple["Figures", ...] = ()
    measure: MeasureValues | None = None

    def to_json(self) -> dict[str, Any]:
        """The node as CONTRACT §4 shows it, children without nodes that take no part."""
        answer = {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "progress": _float(self.progress),
            "expected": _float(self.expected),
            "status": self.status,
            "coverage": _float(self.coverage),
            "children": [child.to_json() for child in self.children if child.takes_part],
        }
        if self.measure is not None:
            m = self.measure
            answer |= {
                "value": m.value,
                "target": m.target,
                "baseline": m.baseline,
                "unit": m.unit,
                "as_of": _iso(m.as_of),
                "stale": m.stale,
                "forecast": _iso(m.forecast),
                "problem": m.problem,
            }
        return answer


@dataclass(frozen=True)
class Rollup:
    """The whole tree at one place on one day, for one filter."""

    place: PlaceInfo
    date: date
    filters: Filters
    results: tuple[Figures, ...]

    def to_json(self) -> dict[str, Any]:
        """The answer of GET /api/v1/rollup."""
        return {
            "place": self.place.to_json(),
            "date": self.date.isoformat(),
            "results": [r.to_json() for r in self.results if r.takes_part],
        }

    def find(self, node_id: str) -> Figures | None:
        """The figures of one node, wherever it is in the tree."""
        stack = list(self.results)
        while stack:
            node = stack.pop()
            if node.id == node_id:
                return node
            stack.extend(node.children)
        return None


def _float(value: Fraction | None) -> float | None:
    """An exact figure as JSON shows it."""
    return None if value is None else float(value)


def _iso(day: date | None) -> str | None:
    """A date as JSON shows it."""
    return None if day is None else day.isoformat()


def rollup(
    session: Session,
    *,
    place_id: str | None = None,
    on: date | None = None,
    filters: Mapping[str, str] | None = None,
    cache: RollupCache | None = None,
) -> Rollup:
    """Every result, output and measure at a place (default: the city) on a day (default:
    today in the city's timezone).

    `filters` keeps the measures declaring every filtered dimension and sums only the
    matching cells. Unknown place: NotFound; unknown dimension or value: TrackerError.
    """
    cache = cache or RollupCache()
    tree = load_tree(session, cache)
    place = _get_place(tree, place_id or tree.city_id)
    on = on or tree.today()
    wanted = parse_filters(tree, filters or {})
    key = (tree.key, place.id, on, wanted)
    answer = cache.answers.get(key)
    if answer is None:
        answer = _compute(session, cache, tree, place, on, wanted)
        cache.answers.put(key, answer)
    return answer


def _compute(
    session: Session,
    cache: RollupCache,
    tree: TreeDef,
    place: PlaceInfo,
    on: date,
    filters: Filters,
) -> Rollup:
    """The roll-up tree for one place; only measures whose data changed are computed."""
    names = {name for name, _ in filters}
    leaves_here = tree.leaves_below.get(place.id, frozenset())
    measures = [
        m
        for m in tree.measures.values()
        if names <= set(m.dimensions) and leaves_here & m.places.keys()
    ]
    figures: dict[str, Figures] = {}
    missing = []
    for measure in measures:
        hit = cache.figures.get((measure.id, measure.version, place.id, on, filters))
        if hit is None:
            missing.append(measure)
        else:
            figures[measure.id] = hit
    facts = leaf_facts(session, cache, tree, missing, on, filters)
    for measure in missing:
        node = tree.nodes[measure.id]
        figures[measure.id] = measure_figures(
            tree, node, measure, facts[measure.id], place, on, filters
        )
        cache.figures.put((measure.id, measure.version, place.id, on, filters), figures[measure.id])

    def build(node_id: str) -> Figures:
        node = tree.nodes[node_id]
        if node.kind == "measure":
            return figures.get(node_id) or _absent_measure(node, tree.measures[node_id], on)
        return _combine(node, tuple(build(child) for child in node.children))

    return Rollup(place, on, filters, tuple(build(root) for root in tree.roots))


def _absent_measure(node: NodeDef, measure: MeasureDef, on: date) -> Figures:
    """A measure that takes no part here: it covers no neighbourhood here or is filtered out."""
    e = expected_progress(measure.start, measure.due, measure.milestones, on)
    values = MeasureValues(None, None, None, measure.unit, None, None, None)
    return Figures(
        node.id, "measure", node.title, node.weight, None, e, "no_data", None, False, (), values
    )


def measure_figures(
    tree: TreeDef,
    node: NodeDef,
    measure: MeasureDef,
    facts: Mapping[str, LeafFacts],
    place: PlaceInfo,
    on: date,
    filters: Filters = (),
) -> Figures:
    """Rules 1–5 and 7–9 for one measure at one place."""
    leaves = sorted(tree.leaves_below[place.id] & measure.places.keys())
    unusable = [leaf for leaf in leaves if leaf in facts and math.isnan(facts[leaf].value)]
    reported = [leaf for leaf in leaves if leaf in facts and leaf not in unusable]
    value = aggregate(measure.aggregate, [facts[leaf].value for leaf in reported])
    if filters:
        baseline = target = None  # no targets for a filtered view in version 1
    else:
        baseline, target = place_baseline_target(measure, place, tree.city_id, reported)
    p = progress(value, baseline, target)
    e = expected_progress(measure.start, measure.due, measure.milestones, on)
    as_of = max((facts[leaf].as_of for leaf in reported), default=None)
    cutoff = stale_before(on, measure.frequency)
    stale = all(facts[leaf].as_of < cutoff for leaf in reported) if reported else None
    points = _place_history(measure.aggregate, [facts[leaf].history for leaf in reported])
    values = MeasureValues(
        value=value,
        target=target,
        baseline=baseline,
        unit=measure.unit,
        as_of=as_of,
        stale=stale,
        forecast=forecast(points, value=value, target=target, progress_now=p),
        problem=f"{', '.join(unusable)}: {UNUSABLE}" if unusable else None,
    )
    coverage = Fraction(len(reported), len(leaves)) if leaves else None
    return Figures(
        node.id,
        "measure",
        node.title,
        node.weight,
        p,
        e,
        status(p, e, value_without_target=value is not None),
        coverage,
        bool(leaves),
        (),
        values,
    )


def place_baseline_target(
    measure: MeasureDef, place: PlaceInfo, city_id: str | None, reported: list[str]
) -> tuple[float | None, float | None]:
    """Rule 3: (B, T) at a place, over the neighbourhoods that gave its value."""
    if place.level == "neighbourhood":
        return measure.places.get(place.id, (None, None))
    pairs = [measure.places[leaf] for leaf in reported]
    baseline = _over(measure.aggregate, [b for b, _ in pairs])
    target = _over(measure.aggregate, [t for _, t in pairs])
    if not reported and measure.aggregate != "sum":
        # A number on a mean, min or max measure applies to every place, even before any
        # neighbourhood reports; so does a map whose values are all equal.
        baseline = _common([b for b, _ in measure.places.values()])
        target = _common([t for _, t in measure.places.values()])
    if place.id == city_id and measure.city_target is not None:
        target = measure.city_target
        if measure.city_baseline is not None:
            baseline = measure.city_baseline
    return baseline, target


def _over(how: str, values: list[float | None]) -> float | None:
    """The aggregate, or None when any value is missing (or there are none)."""
    if any(v is None for v in values):
        return None
    return aggregate(how, values)


def _common(values: list[float | None]) -> float | None:
    """The one value all entries share, or None."""
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _place_history(
    how: str, histories: list[tuple[tuple[date, float], ...]]
) -> list[tuple[date, float]]:
    """(date, V) at the place's last observation dates (rule 9), from its leaves' histories.

    Each leaf keeps its own last HISTORY dates: enough, since a leaf's value on any of the
    place's last HISTORY dates is its value on one of its own last HISTORY dates.
    """
    dates = sorted({day for history in histories for day, _ in history}, reverse=True)[:HISTORY]
    points = []
    for day in dates:
        values = [next((v for d, v in history if d <= day), None) for history in histories]
        points.append((day, aggregate(how, [v for v in values if v is not None])))
    return points


def _combine(node: NodeDef, children: tuple[Figures, ...]) -> Figures:
    """Rule 6: weighted means over the children that have progress."""
    taking_part = [c for c in children if c.takes_part]
    counted = [c for c in taking_part if c.progress is not None]
    total = sum(Fraction(c.weight) for c in taking_part)
    weight = sum(Fraction(c.weight) for c in counted)
    if counted:
        p = sum(Fraction(c.weight) * c.progress for c in counted) / weight
        e = sum(Fraction(c.weight) * c.expected for c in counted) / weight
    else:
        p = e = None
    return Figures(
        node.id,
        node.kind,
        node.title,
        node.weight,
        p,
        e,
        status(p, e),
        weight / total if counted else Fraction(0),
        # Nodes with no measure at all in the tree still show; others need one taking part.
        bool(taking_part) or not children,
        children,
    )


# --- series ----------------------------------------------------------------------------------


def measure_series(
    session: Session,
    *,
    measure_id: str,
    place_id: str | None = None,
    cache: RollupCache | None = None,
) -> list[dict[str, Any]]:
    """[{date, value, expected}] at every date a neighbourhood of the place reported.

    `expected` is in the measure's unit: B + E·(T − B), with B and T over the neighbourhoods
    that had a value on that date; null without a target.
    """
    tree = load_tree(session, cache)
    measure = _get_measure(tree, measure_id)
    place = _get_place(tree, place_id or tree.city_id)
    leaves = sorted(tree.leaves_below[place.id] & measure.places.keys())
    if not leaves:
        return []
    adds_up = measure.kind == "flow" or measure.from_works
    if measure.from_works:
        here = set(leaves)
        rows = sorted(
            (day, leaf, "", amount)
            for _, leaf, day, amount in session.execute(_works_completed([measure.id], date.max))
            if leaf in here
        )
    else:
        obs = Observation
        query = (
            select(obs.date, obs.place_id, obs.dims_key, obs.value)
            .where(obs.measure_id == measure.id, obs.place_id.in_(leaves), obs.value.is_not(None))
            .order_by(obs.date)
        )
        if measure.kind == "flow":
            query = query.where(obs.date >= measure.start)
        rows = session.execute(query).all()
    points = []
    cells: dict[str, dict[str, float]] = defaultdict(dict)  # place → cell → value (flow: sum)
    for index, (day, leaf, key, value) in enumerate(rows):
        if not abs(value) <= MAX_MAGNITUDE:
            value = math.nan  # unusable (see UNUSABLE); a flow's sum stays so from here on
        if adds_up:
            cells[leaf][key] = cells[leaf].get(key, 0.0) + value
        else:
            cells[leaf][key] = value
        if index + 1 < len(rows) and rows[index + 1][0] == day:
            continue  # one point per date, after every row of that date
        reported = sorted(
            p for p, values in cells.items() if not any(map(math.isnan, values.values()))
        )
        point_value = aggregate(measure.aggregate, [math.fsum(cells[p].values()) for p in reported])
        baseline, target = place_baseline_target(measure, place, tree.city_id, reported)
        e = expected_progress(measure.start, measure.due, measure.milestones, day)
        expected = None
        if baseline is not None and target is not None:
            expected = float(Fraction(baseline) + e * (Fraction(target) - Fraction(baseline)))
        points.append({"date": day.isoformat(), "value": point_value, "expected": expected})
    return points


def _get_measure(tree: TreeDef, measure_id: str) -> MeasureDef:
    """The measure, or NotFound (404)."""
    if measure_id not in tree.measures:
        raise NotFound(f"unknown measure {measure_id!r}")
    return tree.measures[measure_id]


def _get_place(tree: TreeDef, place_id: str | None) -> PlaceInfo:
    """The place, or NotFound (404)."""
    if place_id not in tree.places:
        raise NotFound(f"unknown place {place_id!r}")
    return tree.places[place_id]


# --- explain ---------------------------------------------------------------------------------


def explain(
    session: Session,
    *,
    node_id: str,
    place_id: str | None = None,
    on: date | None = None,
    cache: RollupCache | None = None,
) -> dict[str, Any]:
    """The trail behind one figure: neighbourhood values with their sources, or children."""
    cache = cache or RollupCache()
    tree = load_tree(session, cache)
    if node_id not in tree.nodes:
        raise NotFound(f"unknown node {node_id!r}")
    place = _get_place(tree, place_id or tree.city_id)
    answer = rollup(session, place_id=place.id, on=on, cache=cache)
    figures = answer.find(node_id)
    trail: dict[str, Any] = {
        "node": {**figures.to_json(), "weight": figures.weight},
        "place": place.to_json(),
        "date": answer.date.isoformat(),
        "leaves": None,
        "children": None,
    }
    trail["node"].pop("children")
    if figures.kind == "measure":
        measure = tree.measures[node_id]
        facts = leaf_facts(session, cache, tree, [measure], answer.date)[measure.id]
        trail["leaves"] = _leaf_trail(session, tree, measure, place, answer.date, facts)
    else:
        trail["children"] = [
            {
                "id": c.id,
                "kind": c.kind,
                "title": c.title,
                "weight": c.weight,
                "progress": _float(c.progress),
                "expected": _float(c.expected),
                "status": c.status,
                "counted": c.progress is not None,
            }
            for c in figures.children
            if c.takes_part
        ]
    return trail


def _leaf_trail(
    session: Session,
    tree: TreeDef,
    measure: MeasureDef,
    place: PlaceInfo,
    on: date,
    facts: Mapping[str, LeafFacts],
) -> list[dict[str, Any]]:
    """Each neighbourhood of the measure here: its value and the observations behind it."""
    leaves = sorted(tree.leaves_below[place.id] & measure.places.keys())
    sources = _sources(session, measure, leaves, on) if not measure.from_works else {}
    works = _works_behind(session, measure, leaves, on) if measure.from_works else {}
    usable = {leaf for leaf, fact in facts.items() if not math.isnan(fact.value)}
    return [
        {
            "place": leaf,
            "value": facts[leaf].value if leaf in usable else None,
            "counted": leaf in usable,
            "problem": UNUSABLE if leaf in facts and leaf not in usable else None,
            "baseline": measure.places[leaf][0],
            "target": measure.places[leaf][1],
            "observations": sources.get(leaf, []),
            "works": works.get(leaf, []),
        }
        for leaf in leaves
    ]


def _sources(
    session: Session, measure: MeasureDef, leaves: list[str], on: date
) -> dict[str, list[dict[str, Any]]]:
    """The observations a measure's values rest on, with who sent them and how."""
    obs = Observation
    columns = (
        obs.place_id,
        obs.dims_key,
        obs.date,
        obs.value,
        obs.revisions,
        obs.received_at,
        Batch.agency_id,
        Batch.channel,
        Batch.feed_run_id,
    )
    where = and_(obs.measure_id == measure.id, obs.place_id.in_(leaves), _in_window([measure], on))
    if measure.kind == "flow":
        query = select(*columns).join(Batch, Batch.id == obs.batch_id).where(where)
    else:
        rank = func.row_number().over(
            partition_by=(obs.place_id, obs.dims_key), order_by=obs.date.desc()
        )
        ranked = (
            select(*columns, rank.label("rank"))
            .join(Batch, Batch.id == obs.batch_id)
            .where(where)
            .subquery()
        )
        query = select(*(ranked.c[c.key] for c in columns)).where(ranked.c.rank == 1)
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(session.execute(query), key=lambda r: (r[0], r[2], r[1])):
        place_id, key, day, value, revisions, received, agency, channel, run = row
        found[place_id].append(
            {
                "date": day.isoformat(),
                "dims": dict(part.partition("=")[::2] for part in key.split("|") if part),
                "value": value,
                "revisions": revisions,
                "agency": agency,
                "channel": channel,
                "feed_run": run,
                "received": utc_iso(received),
            }
        )
    return found


def _works_behind(
    session: Session, measure: MeasureDef, leaves: list[str], on: date
) -> dict[str, list[dict[str, Any]]]:
    """The completed works a works-derived measure's values rest on (CONTRACT §6)."""
    counted = _counted_works([measure.id], on).subquery("counted")
    query = (
        select(Work, counted.c.place_id, counted.c.share, counted.c.amount, Batch)
        .join(counted, counted.c.work_id == Work.id)
        .join(Batch, Batch.id == Work.batch_id)
        .where(counted.c.place_id.in_(leaves))
        .order_by(counted.c.place_id, Work.actual_end, Work.agency_id, Work.ref)
    )
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for work, place_id, share, amount, batch in session.execute(query):
        found[place_id].append(
            {
                "id": f"{work.agency_id}/{work.ref}",
                "title": work.title,
                "actual_end": work.actual_end.isoformat(),
                "quantity": work.quantity,
                "share": share,
                "amount": amount,
                "agency": work.agency_id,
                "channel": batch.channel,
                "feed_run": batch.feed_run_id,
                "received": utc_iso(work.updated_at),
            }
        )
    return found


# --- timeliness ------------------------------------------------------------------------------


def timeliness(
    session: Session,
    *,
    agency_id: str,
    today: date | None = None,
    cache: RollupCache | None = None,
) -> list[dict[str, Any]]:
    """Per measure of the agency: reports expected, received, and received on time.

    A report is one neighbourhood's observations for one period: a calendar month, quarter
    or year, or for weekly measures a 7-day block counted from `start`. Periods from the
    one holding `start` to the one holding `due` are expected once over (by `today`). A
    report is on time when its first-received observation arrived (UTC) no later than the
    end of the following period.
    """
    if session.get(Agency, agency_id) is None:
        raise NotFound(f"unknown agency {agency_id!r}")
    tree = load_tree(session, cache)
    today = today or tree.today()
    answer = []
    for node in _agency_measures(tree, agency_id):
        measure = tree.measures[node.id]
        first, last = _expected_periods(measure, today)
        # A measure derived from works is never reported: listed, but nothing falls due.
        periods = 0 if measure.from_works else max(last - first + 1, 0)
        received, on_time = (0, 0)
        if periods and measure.places:
            received, on_time = _reports(session, measure, first, last)
        answer.append(
            {
                "measure": measure.id,
                "title": measure.title,
                "frequency": measure.frequency,
                "start": measure.start.isoformat(),
                "due": measure.due.isoformat(),
                "places": len(measure.places),
                "periods": periods,
                "expected": periods * len(measure.places),
                "received": received,
                "on_time": on_time,
            }
        )
    return answer


def _agency_measures(tree: TreeDef, agency_id: str) -> list[NodeDef]:
    """The agency's measures in tree order (measures belong to their output's agency)."""
    found: list[NodeDef] = []

    def walk(node_id: str, agency: str | None) -> None:
        node = tree.nodes[node_id]
        agency = node.agency_id or agency
        if node.kind == "measure" and agency == agency_id:
            found.append(node)
        for child in node.children:
            walk(child, agency)

    for root in tree.roots:
        walk(root, None)
    return found


def period_index(frequency: str, day: date, start: date) -> int:
    """The period holding `day`: calendar months/quarters/years, or weeks from `start`."""
    if frequency == "weekly":
        return (day - start).days // 7
    return (day.year * 12 + day.month - 1) // FREQUENCY_MONTHS[frequency]


def _period_end(frequency: str, index: int, start: date) -> date:
    """The first day after period `index`."""
    if frequency == "weekly":
        return start + timedelta(days=7 * (index + 1))
    months = (index + 1) * FREQUENCY_MONTHS[frequency]
    return date(months // 12, months % 12 + 1, 1)


def _expected_periods(measure: MeasureDef, today: date) -> tuple[int, int]:
    """First and last period index a report is due for by `today` (last < first: none)."""
    first = period_index(measure.frequency, measure.start, measure.start)
    last = period_index(measure.frequency, measure.due, measure.start)
    while last >= first and _period_end(measure.frequency, last, measure.start) > today:
        last -= 1
    return first, last


def _reports(session: Session, measure: MeasureDef, first: int, last: int) -> tuple[int, int]:
    """(received, on time) reports of a measure over periods first..last, counted in SQL."""
    obs = Observation
    dialect = session.get_bind().dialect.name
    period = _period_sql(dialect, measure, obs.date, is_time=False).label("period")
    arrived = _period_sql(dialect, measure, obs.first_received_at, is_time=True)
    per_report = (
        select(obs.place_id, period, func.min(arrived).label("arrived"))
        .where(
            obs.measure_id == measure.id,
            obs.value.is_not(None),
            obs.place_id.in_(sorted(measure.places)),
            obs.date >= measure.start,
        )
        .group_by(obs.place_id, period)
        .subquery()
    )
    on_time = func.sum(case((per_report.c.arrived <= per_report.c.period + 1, 1), else_=0))
    row = session.execute(
        select(func.count(), on_time).where(per_report.c.period.between(first, last))
    ).one()
    return row[0], int(row[1] or 0)


def _period_sql(dialect: str, measure: MeasureDef, column, *, is_time: bool):
    """period_index() in SQL, on SQLite and PostgreSQL; times are taken in UTC."""
    if is_time and dialect == "postgresql":
        column = func.timezone("UTC", column)
    if measure.frequency == "weekly":
        if dialect == "postgresql":
            days = cast(column, Date) - measure.start
        else:
            days = cast(
                func.julianday(func.date(column)) - func.julianday(measure.start.isoformat()),
                Integer,
            )
        return days // 7
    months = cast(extract("year", column), Integer) * 12 + cast(extract("month", column), Integer)
    return (months - 1) // FREQUENCY_MONTHS[measure.frequency]


__all__ = [
    "LRU",
    "Figures",
    "LeafFacts",
    "MeasureDef",
    "MeasureValues",
    "PlaceInfo",
    "Rollup",
    "RollupCache",
    "TreeDef",
    "aggregate",
    "app_cache",
    "expected_progress",
    "explain",
    "forecast",
    "leaf_facts",
    "load_tree",
    "measure_figures",
    "measure_series",
    "months_before",
    "parse_filters",
    "period_index",
    "place_baseline_target",
    "progress",
    "rollup",
    "stale_before",
    "status",
    "timeliness",
    "utc_iso",
]
