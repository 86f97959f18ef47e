"""A measure's values over time at a place, with the expected value at each date."""

import math
from collections import defaultdict
from datetime import date
from fractions import Fraction
from typing import Any

from sqlalchemy import (
    select,
)
from sqlmodel import Session

from tracker.limits import MAX_MAGNITUDE
from tracker.models import (
    Observation,
)
from tracker.rollup.cache import RollupCache
from tracker.rollup.definitions import get_measure, get_place, load_definitions
from tracker.rollup.figures import place_baseline_target
from tracker.rollup.leaves import works_completed
from tracker.rollup.rules import aggregate, expected_progress


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
    tree = load_definitions(session, cache)
    measure = get_measure(tree, measure_id)
    place = get_place(tree, place_id or tree.city_id)
    leaves = sorted(tree.leaves_below[place.id] & measure.places.keys())
    if not leaves:
        return []
    adds_up = measure.kind == "flow" or measure.from_works
    if measure.from_works:
        here = set(leaves)
        rows = sorted(
            (day, leaf, "", amount)
            for _, leaf, day, amount in session.execute(works_completed([measure.id], date.max))
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
