"""Deterministic demo data for the bundled Christchurch tree: observations and works.

The values are synthetic and labelled as demo data; the targets they head for are the
tree's (published totals, split as docs/results-tree.md explains). The generators are
pure — tree and streets in, API-shaped rows out, no database — and seeded, so every run
gives the same rows. `load_demo` feeds them through tracker.submissions, the one write
path, so demo data is validated, versioned and audited like any agency's; pages ask
`has_demo_data` whether to label their figures as demo.
"""

import calendar
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import product
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from tracker import submissions
from tracker.models import Batch

SEED = 2011
NOTE = "demo data"
TITLE_PREFIX = "Demo: "
# Most series run a few years past the 2016 end of the rebuild; those due later (schools,
# wellbeing surveys) run to the end of 2025.
END = date(2019, 12, 31)
LATE_END = date(2025, 12, 31)
# Works are dated as if seen on this day, so "under way" and "planned" stay the same
# whenever the demo is loaded.
WORKS_AS_OF = date(2026, 6, 30)
DECIMALS = {"km": 2, "%": 1}  # every other unit is a count or an area: whole numbers
# Typical shares of the people counted by a dimensioned social measure.
CELL_SHARES = {
    "age": {"0-14": 0.2, "15-64": 0.62, "65+": 0.18},
    "sex": {"female": 0.53, "male": 0.45, "another": 0.02},
}


# --- observations ------------------------------------------------------------------------


def demo_observations(tree) -> dict[str, list[dict[str, Any]]]:
    """Rows per agency, shaped like the body of POST /api/v1/observations."""
    rng = random.Random(SEED)
    owners = measure_agencies(tree)
    rows: dict[str, list[dict[str, Any]]] = {agency.id: [] for agency in tree.agencies}
    for measure in tree.measures():
        if measure.source == "works":
            continue  # derived from works (CONTRACT §6), never submitted
        rows[owners[measure.id]].extend(_measure_rows(measure, tree.dimensions, rng))
    return rows


def measure_agencies(tree) -> dict[str, str]:
    """Each measure's agency: the agency of the output that holds it."""
    output_agency: dict[str, str] = {}
    owners: dict[str, str] = {}
    for node, kind, parent_id, _ in tree.iter_nodes():
        if kind == "output":
            output_agency[node.id] = node.agency
        elif kind == "measure":
            owners[node.id] = output_agency[parent_id]
    return owners


def _measure_rows(measure, declared: dict[str, list[str]], rng: random.Random) -> Iterator[dict]:
    """Every row of one measure: one series per place that reports it."""
    dates = list(report_dates(measure.frequency, measure.start, series_end(measure)))
    ends = _place_ends(measure, rng)
    for place in _reporting_places(measure, ends, rng):
        baseline, end_value = ends[place]
        values = _series(measure, baseline, end_value, dates, rng)
        shares = _cell_shares(measure.dimensions, declared, rng)
        for when, value in _reported(dates, values, rng, carry=measure.kind == "flow"):
            for dims, share in shares:
                row = {
                    "measure": measure.id,
                    "place": place,
                    "date": when.isoformat(),
                    "value": _rounded(measure, value * share),
                    "note": NOTE,
                }
                if dims:
                    row["dims"] = dims
                yield row


def series_end(measure) -> date:
    """The last date a demo series may report."""
    return END if measure.due <= END else LATE_END


def report_dates(frequency: str, start: date, end: date) -> Iterator[date]:
    """Period-end dates from `start` to `end`: the day each periodic report is dated."""
    if frequency == "weekly":
        when = start + timedelta(days=6)
        while when <= end:
            yield when
            when += timedelta(days=7)
        return
    step = {"monthly": 1, "quarterly": 3, "yearly": 12}[frequency]
    month = start.year * 12 + start.month - 1
    month += (step - 1 - month % step) % step  # the end of the period that holds start
    while True:
        year, index = divmod(month, 12)
        when = date(year, index + 1, calendar.monthrange(year, index + 1)[1])
        if when > end:
            return
        yield when
        month += step


def _place_ends(measure, rng: random.Random) -> dict[str, tuple[float, float]]:
    """Per place: (baseline, where its series ends up by `due`).

    Ends scatter around the target (a little above for some places, below for others)
    so that city totals land near the published figures without matching exactly.
    """
    baselines = _per_place(measure, measure.baseline, rng)
    targets = _per_place(measure, measure.target, rng)
    ends = {}
    for place in measure.places:
        baseline = baselines.get(place, 0.0)
        target = targets.get(place, baseline)
        if measure.kind != "level":
            end = target * rng.uniform(0.92, 1.07)
        elif target == 0:
            # A count brought down to nothing: most places get there, a few keep a handful.
            end = 0.0 if rng.random() < 0.7 else baseline * rng.uniform(0.005, 0.03)
        else:
            # Most places fall a little short of a level target, a few overshoot it.
            end = target - (target - baseline) * rng.uniform(-0.04, 0.12)
        ends[place] = (baseline, _clamped(measure, end))
    return ends


def _per_place(measure, spec, rng: random.Random) -> dict[str, float]:
    """A baseline or target as a value per place.

    A map gives each place its own. A number on a sum measure is the city's alone
    (CONTRACT §3), so the demo shares it out at random; on other aggregates it applies
    to every place.
    """
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {place: float(value) for place, value in spec.items()}
    if measure.aggregate != "sum":
        return dict.fromkeys(measure.places, float(spec))
    weights = {place: rng.uniform(0.5, 1.5) for place in measure.places}
    total = sum(weights.values())
    return {place: float(spec) * w / total for place, w in weights.items()}


def _reporting_places(measure, ends: dict, rng: random.Random) -> list[str]:
    """The measure's places less 2–3 that never report it, so "no data" shows.

    Only measures over many places leave some out, and only places with a smaller than
    typical target, so the city totals still approach the published figures.
    """
    places = list(measure.places)
    if len(places) < 20 or rng.random() < 0.4:
        return places
    by_size = sorted(places, key=lambda p: (abs(ends[p][1] - ends[p][0]), p))
    silent = set(rng.sample(by_size[: len(by_size) // 2], rng.choice((2, 3))))
    return [p for p in places if p not in silent]


def _series(measure, baseline: float, end: float, dates: list[date], rng: random.Random):
    """The place's value on each report date, following its kind."""
    midpoint = rng.uniform(0.35, 0.65)
    span = max((measure.due - measure.start).days, 1)
    progress = [_s_curve(min((d - measure.start).days / span, 1.0), midpoint) for d in dates]
    if measure.kind == "cumulative":
        # Rising along an S-curve, then a small trickle after `due` (late finishers).
        trickle = rng.uniform(0.0, 0.02)
        return [
            baseline + (end - baseline) * p + end * trickle * max(0, (d - measure.due).days) / 3650
            for d, p in zip(dates, progress, strict=True)
        ]
    if measure.kind == "level":
        wobble = abs(end - baseline) * 0.03
        return [
            _clamped(measure, baseline + (end - baseline) * p + rng.gauss(0, wobble))
            for p in progress
        ]
    return _flow(measure, end, dates, rng)


def _flow(measure, total: float, dates: list[date], rng: random.Random) -> list[float]:
    """Per-period amounts that add up to `total` by `due`, then a fading tail.

    Demand peaks about a third of the way through, as support did after the quakes.
    """
    span = max((measure.due - measure.start).days, 1)
    shape = []
    for when in dates:
        t = (when - measure.start).days / span
        bump = t * math.exp(-3 * t) if t <= 1 else math.exp(-3) * math.exp(-(t - 1))
        shape.append(bump * rng.uniform(0.85, 1.15))
    in_window = sum(s for s, d in zip(shape, dates, strict=True) if d <= measure.due)
    scale = total / in_window if in_window else 0.0
    return [s * scale for s in shape]


def _s_curve(t: float, midpoint: float) -> float:
    """Logistic progress from 0 at t=0 to 1 at t=1, steepest at `midpoint`."""

    def logistic(x: float) -> float:
        return 1 / (1 + math.exp(-9 * (x - midpoint)))

    low, high = logistic(0.0), logistic(1.0)
    return (logistic(t) - low) / (high - low)


def _reported(dates: list[date], values: list[float], rng: random.Random, *, carry: bool):
    """The (date, value) pairs a place actually sent.

    Some places start late, skip periods or stop early, so coverage is below 100% and
    some series go stale, as real reporting does. With `carry` (flows) a report after a
    gap includes the amounts of the periods it missed, as a late return would.
    """
    first = rng.choice((0,) * 8 + (1, 2, 4))
    last = len(dates)
    if rng.random() < 0.08:
        last = max(first + 1, int(last * rng.uniform(0.6, 0.9)))
    gap_rate = rng.choice((0.0, 0.02, 0.05, 0.1))
    backlog = 0.0
    for index in range(last):
        if index < first or rng.random() < gap_rate:
            backlog += values[index] if carry else 0.0
            continue
        yield dates[index], values[index] + backlog
        backlog = 0.0


def _cell_shares(dimensions, declared: dict[str, list[str]], rng: random.Random):
    """(dims, share) for every cell of the measure's dimensions, or ({}, 1) without any.

    Shares are fixed for the whole series, so a cumulative cell never falls.
    """
    if not dimensions:
        return [({}, 1.0)]
    cells = []
    for combo in product(*(declared[name] for name in dimensions)):
        share = 1.0
        for name, value in zip(dimensions, combo, strict=True):
            typical = CELL_SHARES.get(name, {})
            share *= typical.get(value, 1 / len(declared[name]))
        cells.append((dict(zip(dimensions, combo, strict=True)), share * rng.uniform(0.8, 1.2)))
    total = sum(share for _, share in cells)
    return [(dims, share / total) for dims, share in cells]


def _clamped(measure, value: float) -> float:
    """Keep a value possible: never negative, a percentage never above 100."""
    value = max(value, 0.0)
    return min(value, 100.0) if measure.unit == "%" else value


def _rounded(measure, value: float) -> float:
    """Round like the agency would report: km to 10 m, % to one place, counts whole."""
    return float(round(value, DECIMALS.get(measure.unit, 0)))


# --- works -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkKind:
    """A family of demo works: who does them, where, when, and what they feed."""

    agency: str
    code: str  # the middle of the work id: scirt-ww-0001
    title: str
    count: int
    first: date  # planned starts fall between first and last
    last: date
    days: tuple[int, int]  # shortest and longest planned duration
    measure: str | None = None  # a source: works measure they count towards
    quantity: float | None = None  # total quantity of the completed works (measure's unit)


REBUILD = (date(2011, 9, 1), date(2016, 3, 31))
# The SCIRT rebuild (2011–2016) feeds the two works-derived measures with the published
# totals: about 562 km of wastewater pipe and 70 pump stations. Later, longer council and
# NZTA works give street pages entries "under way" and "planned" today.
WORK_KINDS = (
    WorkKind(
        "scirt",
        "ww",
        "Wastewater pipe relaid",
        300,
        *REBUILD,
        (45, 300),
        measure="wastewater-pipe-relaid",
        quantity=562.0,
    ),
    WorkKind(
        "scirt",
        "ps",
        "Wastewater pump station rebuilt",
        70,
        *REBUILD,
        (120, 360),
        measure="pump-stations-rebuilt",
    ),
    WorkKind("scirt", "sw", "Stormwater pipe relaid", 40, *REBUILD, (45, 240)),
    WorkKind("scirt", "fw", "Fresh-water main relaid", 50, *REBUILD, (45, 240)),
    WorkKind("scirt", "rd", "Road rebuilt", 80, *REBUILD, (60, 300)),
    WorkKind("ccc", "rd", "Road resurfacing", 50, date(2017, 1, 1), date(2028, 6, 30), (60, 540)),
    WorkKind(
        "ccc", "ww", "Wastewater pipe renewal", 30, date(2021, 1, 1), date(2028, 6, 30), (180, 900)
    ),
    WorkKind(
        "nzta", "sh", "State highway upgrade", 10, date(2019, 1, 1), date(2028, 6, 30), (365, 1100)
    ),
)


def demo_works(tree, streets) -> dict[str, list[dict[str, Any]]]:
    """Works per agency, shaped like the body of POST /api/v1/works.

    `streets` are objects with `id`, `name`, `place_ids` and `length_m`. A work lies on
    a street wholly inside the neighbourhoods its agency's measures cover, so none of it
    falls where the measure is not tracked.
    """
    rng = random.Random(SEED)
    measures = {m.id: m for m in tree.measures()}
    owners = measure_agencies(tree)
    rows: dict[str, list[dict[str, Any]]] = {agency.id: [] for agency in tree.agencies}
    for kind in WORK_KINDS:
        if kind.agency not in rows or (kind.measure and owners.get(kind.measure) != kind.agency):
            continue  # another city's tree: only the kinds it can hold
        covered = _covered_places(kind, measures, owners)
        candidates = [s for s in streets if s.place_ids and set(s.place_ids) <= covered]
        if candidates:
            rows[kind.agency].extend(_kind_works(kind, candidates, rng))
    return rows


def _covered_places(kind: WorkKind, measures: dict, owners: dict[str, str]) -> set[str]:
    """The places of the kind's measure, or of every measure of its agency."""
    if kind.measure:
        return set(measures[kind.measure].places)
    return {p for m in measures.values() if owners[m.id] == kind.agency for p in m.places}


def _kind_works(kind: WorkKind, streets: list, rng: random.Random) -> list[dict[str, Any]]:
    """The works of one kind, on streets drawn in proportion to their length."""
    chosen = rng.choices(streets, weights=[max(s.length_m, 1.0) for s in streets], k=kind.count)
    works = [_work(kind, index, street, rng) for index, street in enumerate(chosen, 1)]
    if kind.quantity is not None:
        _share_quantity(kind, works, chosen)
    return works


def _work(kind: WorkKind, index: int, street, rng: random.Random) -> dict[str, Any]:
    """One work with its plan, and what actually happened as seen on WORKS_AS_OF."""
    window = (kind.last - kind.first).days
    planned_start = kind.first + timedelta(days=rng.randrange(window + 1))
    planned_end = planned_start + timedelta(days=rng.randint(*kind.days))
    work: dict[str, Any] = {
        "id": f"{kind.agency}-{kind.code}-{index:04d}",
        "title": f"{TITLE_PREFIX}{kind.title}, {street.name}",
        "street": street.id,
        "planned_start": planned_start.isoformat(),
        "planned_end": planned_end.isoformat(),
    }
    if kind.measure:
        work["measure"] = kind.measure
    if rng.random() < 0.03:
        work["status"] = "cancelled"
        return work
    actual_start = planned_start + timedelta(days=rng.randint(-20, 60))
    actual_end = actual_start + (planned_end - planned_start) * rng.uniform(0.8, 1.5)
    if kind.measure:
        # Rebuild works counted by a measure all finished within its programme.
        actual_end = min(actual_end, date(kind.last.year, 12, 31))
    if actual_start > WORKS_AS_OF:
        work["status"] = "planned"
    elif actual_end > WORKS_AS_OF:
        work.update(status="in_progress", actual_start=actual_start.isoformat())
    else:
        work.update(
            status="complete",
            actual_start=actual_start.isoformat(),
            actual_end=max(actual_end, actual_start).isoformat(),
        )
    return work


def _share_quantity(kind: WorkKind, works: list[dict], streets: list) -> None:
    """Give each work a quantity in proportion to its street's length.

    Quantities are scaled so the completed works add up to the kind's published total:
    a work stands for its street's share of the programme, laterals included.
    """
    done = [s.length_m for w, s in zip(works, streets, strict=True) if w["status"] == "complete"]
    scale = kind.quantity / sum(done) if done else 0.0
    decimals = 2 if kind.quantity < 10_000 else 0
    for work, street in zip(works, streets, strict=True):
        work["quantity"] = round(street.length_m * scale, decimals)


# --- loading -----------------------------------------------------------------------------


def load_demo(session, tree, streets) -> dict[str, int]:
    """Submit the demo rows through the one write path; the counts accepted.

    One batch of observations and one of works per agency, on channel "demo".
    """
    observations = demo_observations(tree)
    works = demo_works(tree, streets)
    counts = {"observations": 0, "works": 0}
    for agency in tree.agencies:
        if observations[agency.id]:
            outcome = submissions.submit_observations(
                session, agency_id=agency.id, rows=observations[agency.id], channel="demo"
            )
            counts["observations"] += outcome.accepted
        if works[agency.id]:
            outcome = submissions.submit_works(
                session, agency_id=agency.id, rows=works[agency.id], channel="demo"
            )
            counts["works"] += outcome.accepted
    return counts


def has_demo_data(session: Session) -> bool:
    """Whether any demo batch was loaded (pages then label their figures as demo)."""
    return (
        session.scalar(select(func.count()).select_from(Batch).where(Batch.channel == "demo")) > 0
    )
