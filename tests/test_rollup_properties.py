"""Properties of the roll-up that hold for any observations (hypothesis)."""

from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from test_rollup import city, submit  # noqa: F401  (city is a fixture)

from tracker.models import Batch, Observation, ObservationRevision
from tracker.rollup import RollupCache, rollup

# measure → (agency, places, has the age dimension)
MEASURES = {
    "homes": ("eqc", ["opawa", "st-albans", "riccarton"], False),
    "unsewered": ("eqc", ["opawa", "st-albans"], False),
    "visits": ("eqc", ["opawa", "st-albans", "riccarton"], True),
    "flat": ("council", ["opawa", "riccarton"], False),
    "score": ("council", ["opawa", "st-albans", "riccarton"], False),
    "lowest": ("council", ["opawa", "st-albans", "riccarton"], False),
    "highest": ("council", ["opawa", "riccarton"], False),
}
PLACES = ["tiny", "heathcote", "central", "opawa", "st-albans", "riccarton", "red-zone-park"]
FIRST = date(2019, 12, 1)
examples = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@st.composite
def observation(draw, days=(0, 150)):
    """One valid row: a measure, one of its places, a day from FIRST, a value."""
    measure = draw(st.sampled_from(sorted(MEASURES)))
    _, places, has_age = MEASURES[measure]
    row = {
        "measure": measure,
        "place": draw(st.sampled_from(places)),
        "date": (FIRST + timedelta(days=draw(st.integers(*days)))).isoformat(),
        "value": draw(st.integers(-100, 400)) / 2,
    }
    if has_age:
        row["dims"] = {"age": draw(st.sampled_from(["0-14", "15-64", "65+"]))}
    return row


def key(row):
    return (row["measure"], row["place"], row["date"], str(row.get("dims")))


rows = st.lists(observation(), max_size=25, unique_by=key)
days = st.integers(0, 160).map(lambda n: FIRST + timedelta(days=n))


def store(session, rows):
    """Start from no observations, then submit `rows` agency by agency."""
    session.execute(delete(ObservationRevision))
    session.execute(delete(Observation))
    session.execute(delete(Batch))
    session.commit()
    send(session, rows)


def send(session, rows):
    """Submit `rows` through the write path, agency by agency."""
    for agency in ("eqc", "council"):
        mine = [r for r in rows if MEASURES[r["measure"]][0] == agency]
        if mine:
            submit(session, agency, *mine)


def nodes(answer):
    stack = list(answer["results"])
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node["children"])


@examples
@given(rows=rows, on=days)
def test_progress_expected_and_coverage_stay_between_0_and_1(city, rows, on):  # noqa: F811
    store(city, rows)
    cache = RollupCache()
    for place in PLACES:
        for node in nodes(rollup(city, place_id=place, on=on, cache=cache).to_json()):
            for name in ("progress", "expected", "coverage"):
                assert node[name] is None or 0 <= node[name] <= 1, (place, node)


@examples
@given(rows=rows, on=days)
def test_a_fully_reported_sum_is_the_sum_of_its_neighbourhoods(city, rows, on):  # noqa: F811
    everywhere = [
        {"measure": "homes", "place": p, "date": FIRST.isoformat(), "value": 1.0}
        for p in MEASURES["homes"][1]
    ]
    store(city, everywhere + [r for r in rows if key(r) not in {key(e) for e in everywhere}])
    cache = RollupCache()

    def value(measure, place):
        answer = rollup(city, place_id=place, on=on, cache=cache).to_json()
        return next(n for n in nodes(answer) if n["id"] == measure)["value"]

    for measure in ("homes", "visits", "unsewered", "flat"):
        leaves = [value(measure, place) for place in MEASURES[measure][1]]
        if None not in leaves:
            assert value(measure, "tiny") == pytest.approx(sum(leaves))
    assert value("homes", "tiny") == pytest.approx(
        sum(value("homes", p) for p in ["opawa", "st-albans", "riccarton"])
    )


@examples
@given(
    before=rows,
    after=st.lists(observation(days=(101, 160)), min_size=1, max_size=10, unique_by=key),
    offset=st.integers(0, 100),
)
def test_observations_dated_after_the_day_change_nothing(city, before, after, offset):  # noqa: F811
    on = FIRST + timedelta(days=offset)
    earlier = [r for r in before if r["date"] <= on.isoformat()]
    store(city, earlier)
    cache = RollupCache()
    answers = {p: rollup(city, place_id=p, on=on, cache=cache).to_json() for p in PLACES}
    send(city, [r for r in after if key(r) not in {key(e) for e in earlier}])
    for place in PLACES:
        assert rollup(city, place_id=place, on=on, cache=cache).to_json() == answers[place]
        assert rollup(city, place_id=place, on=on).to_json() == answers[place]


@examples
@given(first=rows, second=rows, on=days, age=st.sampled_from(["0-14", "15-64", "65+"]))
def test_cached_and_uncached_answers_are_identical(city, first, second, on, age):  # noqa: F811
    cache = RollupCache()
    store(city, first)
    for place in PLACES:
        rollup(city, place_id=place, on=on, cache=cache)
    # A second batch revises some values and adds others; the cache must follow.
    send(city, second)
    for place in PLACES:
        for filters in ({}, {"age": age}):
            cached = rollup(city, place_id=place, on=on, filters=filters, cache=cache)
            fresh = rollup(city, place_id=place, on=on, filters=filters)
            assert cached.to_json() == fresh.to_json()


@given(
    kind=st.sampled_from(["cumulative", "level", "flow"]),
    days=st.lists(st.integers(0, 400), min_size=1, max_size=12, unique=True),
    values=st.lists(st.floats(-1e6, 1e6), min_size=12, max_size=12),
    total=st.floats(-1e7, 1e7),
)
def test_a_lone_cell_has_the_history_the_general_rule_gives(kind, days, values, total):
    """The shortcut for measures without dimensions values each date as _value_at does."""
    from tracker.rollup.leaves import _one_cell_history, _value_at
    from tracker.rollup.rules import HISTORY

    rows = sorted(
        ((FIRST + timedelta(days=d), v) for d, v in zip(days, values, strict=False)),
        reverse=True,
    )[:HISTORY]  # as the roll-up reads a cell: newest first, at most HISTORY rows
    general = tuple((day, _value_at(kind, {"": rows}, {"": total}, day)) for day, _ in rows)
    assert _one_cell_history(kind, rows, total) == general
