"""The figures of the tree at one place on one day: each measure from its neighbourhood
values (rules 3–5, 7–9), results and outputs as weighted means (rule 6).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Any

from sqlmodel import Session

from tracker.rollup.cache import RollupCache
from tracker.rollup.definitions import (
    Filters,
    MeasureDef,
    NodeDef,
    PlaceInfo,
    TreeDef,
    get_place,
    load_definitions,
    parse_filters,
)
from tracker.rollup.leaves import UNUSABLE, LeafFacts, leaf_facts
from tracker.rollup.rules import (
    HISTORY,
    aggregate,
    expected_progress,
    forecast,
    progress,
    stale_before,
    status,
)


@dataclass(frozen=True, kw_only=True)
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


@dataclass(frozen=True, kw_only=True)
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
            "progress": as_float(self.progress),
            "expected": as_float(self.expected),
            "status": self.status,
            "coverage": as_float(self.coverage),
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


@dataclass(frozen=True, kw_only=True)
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


def as_float(value: Fraction | None) -> float | None:
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
    tree: TreeDef | None = None,
) -> Rollup:
    """Every result, output and measure at a place (default: the city) on a day (default:
    today in the city's timezone).

    `filters` keeps the measures declaring every filtered dimension and sums only the
    matching cells. Unknown place: NotFound; unknown dimension or value: TrackerError.
    `tree`: the definitions this caller loaded already (a page of every neighbourhood
    reads them once, not once per place).
    """
    cache = cache or RollupCache()
    tree = tree or load_definitions(session, cache)
    place = get_place(tree, place_id or tree.city_id)
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
        hit = cache.figures.get((measure.id, measure.data_version, place.id, on, filters))
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
        cache.figures.put(
            (measure.id, measure.data_version, place.id, on, filters), figures[measure.id]
        )

    def build(node_id: str) -> Figures:
        node = tree.nodes[node_id]
        if node.kind == "measure":
            return figures.get(node_id) or _absent_measure(node, tree.measures[node_id], on)
        return _combine(node, tuple(build(child) for child in node.children))

    return Rollup(
        place=place, date=on, filters=filters, results=tuple(build(root) for root in tree.roots)
    )


def _absent_measure(node: NodeDef, measure: MeasureDef, on: date) -> Figures:
    """A measure that takes no part here: it covers no neighbourhood here or is filtered out."""
    e = expected_progress(measure.start, measure.due, measure.milestones, on)
    values = MeasureValues(
        value=None,
        target=None,
        baseline=None,
        unit=measure.unit,
        as_of=None,
        stale=None,
        forecast=None,
    )
    return Figures(
        id=node.id,
        kind="measure",
        title=node.title,
        weight=node.weight,
        progress=None,
        expected=e,
        status="no_data",
        coverage=None,
        takes_part=False,
        measure=values,
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
        id=node.id,
        kind="measure",
        title=node.title,
        weight=node.weight,
        progress=p,
        expected=e,
        status=status(p, e, value_without_target=value is not None),
        coverage=coverage,
        takes_part=bool(leaves),
        measure=values,
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
        id=node.id,
        kind=node.kind,
        title=node.title,
        weight=node.weight,
        progress=p,
        expected=e,
        status=status(p, e),
        coverage=weight / total if counted else Fraction(0),
        # Nodes with no measure at all in the tree still show; others need one taking part.
        takes_part=bool(taking_part) or not children,
        children=children,
    )
