"""Neighbourhood values from SQL (rules 1, 2 and the filter rule): for each (measure,
neighbourhood, dimension cell) the latest few observations dated on or before the day,
and for flow measures the sums over [start, day]; works-derived measures from completed
works (CONTRACT §6).
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import (
    Date,
    Float,
    String,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session

from tracker.cells import dims_key
from tracker.limits import MAX_MAGNITUDE
from tracker.models import (
    MeasurePlace,
    Observation,
    Work,
    WorkPlace,
)
from tracker.rollup.cache import RollupCache
from tracker.rollup.definitions import Filters, MeasureDef, TreeDef
from tracker.rollup.rules import HISTORY

MAX_UNION = 400  # SELECTs per UNION ALL (SQLite allows 500)
# Values outside ±MAX_MAGNITUDE are refused on the way in, but rows stored before that
# rule may hold them: the roll-up leaves such a neighbourhood out (it lowers coverage)
# and says so, rather than letting one sum overflow every figure of the tree.
UNUSABLE = (
    f"a stored value is outside ±{MAX_MAGNITUDE:.0e}; this neighbourhood's figure cannot be "
    "computed until the agency sends a new value"
)


@dataclass(frozen=True, kw_only=True)
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
        hit = cache.leaves.get((measure.id, measure.data_version, on, filters))
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
            cache.leaves.put((measure.id, measure.data_version, on, filters), facts)
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


def counted_works(measure_ids: list[str], on: date):
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


def works_completed(measure_ids: list[str], on: date):
    """(measure, place, day, amount) of completed works, summed per day."""
    parts = counted_works(measure_ids, on).subquery("counted")
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
        works_completed([m.id for m in measures], on)
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


def in_window(measures: list[MeasureDef], on: date):
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
        return LeafFacts(value=math.nan, as_of=max(rows[0][0] for rows in cells.values()))
    if filters:
        wanted = dict(filters)
        matching = {k: rows for k, rows in cells.items() if _matches(k, wanted)}
        # A neighbourhood that reported other cells in the window counts 0 for this filter.
        used = matching or cells
        as_of = max(rows[0][0] for rows in used.values())
        value = _value_at(kind, matching, cell_totals, None) if matching else 0.0
        return LeafFacts(value=value, as_of=as_of)
    history = _history(kind, cells, cell_totals)
    if not history:
        return None
    return LeafFacts(value=history[0][1], as_of=history[0][0], history=history)


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
