"""Roll-up semantics (CONTRACT §3), each rule checked against figures worked out by hand.

The test city (fixtures/rollup/city.yaml) has areas heathcote (opawa, st-albans) and
central (riccarton, red-zone-park). Most measures run 2020-01-01 → 2020-04-10, 100 days,
so expected progress on day k is k/100: 0.3 on 2020-01-31.
"""

from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlmodel import Session

from tracker.cli import initialise
from tracker.errors import NotFound, TrackerError
from tracker.models import Feed, FeedRun
from tracker.rollup import (
    RollupCache,
    expected_progress,
    explain,
    forecast,
    measure_series,
    months_before,
    period_index,
    progress,
    rollup,
    stale_before,
    status,
    timeliness,
)
from tracker.rollup import leaves as rollup_leaves
from tracker.settings import Settings
from tracker.submissions import submit_observations

CITY_TREE = Path(__file__).parent / "fixtures" / "rollup" / "city.yaml"
DAY = date(2020, 1, 31)  # day 30: E = 0.3


@pytest.fixture
def city(database_url, tmp_path):
    """A session on the roll-up test city, no observations yet."""
    settings = Settings(
        database_url=database_url,
        tree=CITY_TREE,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        _env_file=None,
    )
    engine, _ = initialise(settings)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def obs(measure, place, day, value, **dims):
    """One observation row as agencies send it."""
    row = {"measure": measure, "place": place, "date": day, "value": value}
    if dims:
        row["dims"] = dims
    return row


def submit(session, agency, *rows, channel="api", **options):
    """Store rows through the one write path and commit."""
    submit_observations(session, agency_id=agency, rows=list(rows), channel=channel, **options)
    session.commit()


def find(nodes, node_id):
    """A node (JSON) anywhere in a list of nodes, or None."""
    for node in nodes:
        if node["id"] == node_id:
            return node
        hit = find(node["children"], node_id)
        if hit is not None:
            return hit
    return None


def node(session, node_id, place="tiny", on=DAY, cache=None, **filters):
    """One node of the roll-up at a place on a day, as the API shows it."""
    answer = rollup(session, place_id=place, on=on, filters=filters, cache=cache)
    return find(answer.to_json()["results"], node_id)


# --- rule 1 and 2: values ------------------------------------------------------------------


def test_cumulative_value_is_the_latest_observation_on_or_before_the_day(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 20),
        obs("homes", "opawa", "2020-01-20", 30),
    )
    assert node(city, "homes", "opawa", date(2020, 1, 9))["value"] is None
    assert node(city, "homes", "opawa", date(2020, 1, 10))["value"] == 20
    assert node(city, "homes", "opawa", date(2020, 1, 19))["value"] == 20
    assert node(city, "homes", "opawa", DAY)["value"] == 30


def test_sum_measure_takes_baseline_and_target_over_the_leaves_that_reported(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 20),
        obs("homes", "opawa", "2020-01-20", 30),
        obs("homes", "st-albans", "2020-01-15", 50),
    )
    at_city = node(city, "homes")
    assert (at_city["value"], at_city["baseline"], at_city["target"]) == (80, 0, 300)
    assert at_city["progress"] == pytest.approx(80 / 300)
    assert at_city["coverage"] == pytest.approx(2 / 3)
    assert at_city["as_of"] == "2020-01-20"
    heathcote = node(city, "homes", "heathcote")
    assert (heathcote["value"], heathcote["target"], heathcote["coverage"]) == (80, 300, 1)
    central = node(city, "homes", "central")
    assert central["value"] is None and central["target"] is None
    assert central["baseline"] is None and central["progress"] is None
    assert (central["coverage"], central["status"]) == (0, "no_data")
    assert central["as_of"] is None and central["stale"] is None
    riccarton = node(city, "homes", "riccarton")  # a leaf shows its own target unreported
    assert (riccarton["value"], riccarton["target"], riccarton["status"]) == (None, 300, "no_data")


@pytest.mark.parametrize(
    ("measure", "place", "value", "baseline", "target"),
    [
        ("score", "tiny", (60 + 70 + 75) / 3, 50, 80),
        ("score", "central", 75, 50, 80),
        ("lowest", "tiny", 5, 0, 10),
        ("lowest", "heathcote", 5, 0, 10),
        ("highest", "tiny", 55, 0, 100),
        ("highest", "heathcote", 40, 0, 100),
    ],
)
def test_mean_min_and_max_measures(city, measure, place, value, baseline, target):
    submit(
        city,
        "council",
        obs("score", "opawa", "2020-01-10", 60),
        obs("score", "st-albans", "2020-01-10", 70),
        obs("score", "riccarton", "2020-01-05", 90),
        obs("score", "riccarton", "2020-01-20", 75),
        obs("lowest", "opawa", "2020-01-10", 8),
        obs("lowest", "st-albans", "2020-01-10", 5),
        obs("lowest", "riccarton", "2020-01-10", 12),
        obs("highest", "opawa", "2020-01-10", 40),
        obs("highest", "riccarton", "2020-01-10", 55),
    )
    found = node(city, measure, place)
    assert found["value"] == pytest.approx(value)
    assert (found["baseline"], found["target"]) == (baseline, target)
    assert found["progress"] == pytest.approx((value - baseline) / (target - baseline))


def test_a_number_on_a_mean_measure_applies_everywhere_before_anyone_reports(city):
    for place in ("tiny", "heathcote", "opawa"):
        found = node(city, "score", place)
        assert (found["value"], found["baseline"], found["target"]) == (None, 50, 80)
        assert found["status"] == "no_data"


def test_flow_sums_the_observations_dated_from_start_to_the_day(city):
    submit(
        city,
        "eqc",
        obs("visits", "opawa", "2019-12-20", 100, age="65+"),  # before start: not counted
        obs("visits", "opawa", "2020-01-05", 10, age="65+"),
        obs("visits", "opawa", "2020-01-12", 20, **{"age": "0-14"}),
        obs("visits", "opawa", "2020-01-19", 5, age="65+"),
    )
    before = node(city, "visits", "opawa", date(2020, 1, 4))
    assert (before["value"], before["coverage"]) == (None, 0)
    assert node(city, "visits", "opawa", date(2020, 1, 12))["value"] == 30
    later = node(city, "visits", "opawa")
    assert (later["value"], later["as_of"]) == (35, "2020-01-19")


# --- rule 3 and 4: baselines, targets, progress ---------------------------------------------


def test_sum_measure_with_a_city_number_has_no_local_target(city):
    submit(
        city,
        "eqc",
        obs("visits", "opawa", "2020-01-05", 10, age="65+"),
        obs("visits", "st-albans", "2020-01-06", 30, **{"age": "0-14"}),
    )
    at_city = node(city, "visits")
    assert (at_city["value"], at_city["baseline"], at_city["target"]) == (40, 0, 1000)
    assert at_city["progress"] == pytest.approx(0.04)
    for place in ("opawa", "heathcote"):
        local = node(city, "visits", place)
        assert local["target"] is None and local["progress"] is None
        assert local["status"] == "no_target"


def test_measure_without_target_shows_its_value_as_no_target(city):
    submit(city, "council", obs("noted", "opawa", "2020-01-05", 3))
    assert node(city, "noted")["status"] == "no_target"
    assert node(city, "noted")["value"] == 3
    assert node(city, "noted", "st-albans")["status"] == "no_data"


def test_decreasing_measure_progresses_towards_a_lower_target(city):
    submit(
        city,
        "eqc",
        obs("unsewered", "opawa", "2020-01-10", 30),
        obs("unsewered", "st-albans", "2020-01-10", 40),
    )
    assert node(city, "unsewered", "opawa")["progress"] == pytest.approx(0.5)  # 50 → 30 of 10
    assert node(city, "unsewered", "st-albans")["progress"] == 0  # worse than baseline: 0
    at_city = node(city, "unsewered")
    assert (at_city["value"], at_city["baseline"], at_city["target"]) == (70, 80, 20)
    assert at_city["progress"] == pytest.approx(1 / 6)
    submit(city, "eqc", obs("unsewered", "opawa", "2020-01-11", 5))
    assert node(city, "unsewered", "opawa")["progress"] == 1  # beyond target: clamped
    assert node(city, "unsewered", "opawa")["status"] == "complete"


def test_target_equal_to_baseline_is_all_or_nothing(city):
    submit(
        city,
        "council",
        obs("flat", "opawa", "2020-01-10", 5),
        obs("flat", "riccarton", "2020-01-10", 8),
    )
    assert node(city, "flat", "opawa")["progress"] == 1
    assert node(city, "flat", "riccarton")["progress"] == 0
    assert node(city, "flat")["progress"] == 0  # 13 against 12 → 12
    assert node(city, "flat", "heathcote")["progress"] == 1


@pytest.mark.parametrize(
    ("value", "baseline", "target", "expected"),
    [
        (5, 0, 10, Fraction(1, 2)),
        (-5, 0, 10, Fraction(0)),
        (15, 0, 10, Fraction(1)),
        (30, 50, 10, Fraction(1, 2)),
        (7, 7, 7, Fraction(1)),
        (8, 7, 7, Fraction(0)),
        (None, 0, 10, None),
        (5, 0, None, None),
    ],
)
def test_progress(value, baseline, target, expected):
    assert progress(value, baseline, target) == expected


# --- rule 5: expected progress -------------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "milestones", "expected"),
    [
        (date(2019, 12, 31), (), Fraction(0)),
        (date(2020, 1, 1), (), Fraction(0)),
        (date(2020, 1, 31), (), Fraction(3, 10)),
        (date(2020, 4, 10), (), Fraction(1)),
        (date(2021, 1, 1), (), Fraction(1)),
        (date(2020, 1, 11), ((date(2020, 1, 21), 0.5),), Fraction(1, 4)),
        (date(2020, 1, 21), ((date(2020, 1, 21), 0.5),), Fraction(1, 2)),
        (date(2020, 2, 10), ((date(2020, 1, 21), 0.5),), Fraction(5, 8)),
    ],
)
def test_expected_progress(on, milestones, expected):
    assert expected_progress(date(2020, 1, 1), date(2020, 4, 10), milestones, on) == expected


def test_measure_node_follows_its_milestones_and_always_has_expected(city):
    assert node(city, "staged", "opawa", date(2020, 1, 11))["expected"] == 0.25
    assert node(city, "staged", "opawa", date(2020, 2, 10))["expected"] == 0.625
    assert node(city, "homes", "opawa")["expected"] == 0.3  # no value: E all the same


# --- rule 6: outputs and results -----------------------------------------------------------


def test_outputs_and_results_are_weighted_means_over_children_with_progress(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 50),  # P 0.5, weight 1
        obs("unsewered", "opawa", "2020-01-10", 40),  # P 0.25, weight 2
    )
    submit(
        city,
        "council",
        obs("staged", "opawa", "2020-01-10", 5),  # P 0.5, E 0.5625 (milestone)
        obs("score", "opawa", "2020-01-10", 65),  # P 0.5, E 0.3
    )
    repairs = node(city, "eqc-repairs")
    assert repairs["progress"] == pytest.approx(1 / 3)  # (1·0.5 + 2·0.25) / 3
    assert repairs["expected"] == pytest.approx(0.3)
    assert repairs["coverage"] == pytest.approx(3 / 4)  # visits (weight 1) has none
    assert repairs["status"] == "on_track"
    council = node(city, "council-housing")
    assert (council["progress"], council["expected"], council["coverage"]) == (None, None, 0)
    assert council["status"] == "no_data"
    housing = node(city, "housing")  # eqc-repairs weight 3 counted, council-housing not
    assert housing["progress"] == pytest.approx(1 / 3)
    assert housing["coverage"] == pytest.approx(3 / 4)
    wellbeing = node(city, "council-wellbeing")
    assert wellbeing["progress"] == pytest.approx(0.5)
    assert wellbeing["expected"] == pytest.approx((0.5625 + 0.3) / 2)  # counted children only
    assert wellbeing["coverage"] == pytest.approx(2 / 6)
    assert wellbeing["status"] == "on_track"  # 0.5 ≥ 0.43125 − 0.05


def test_measures_take_part_only_at_their_places(city):
    submit(city, "council", obs("flat", "opawa", "2020-01-10", 5))
    assert rollup(city, place_id="red-zone-park", on=DAY).to_json()["results"] == []
    assert node(city, "flat", "heathcote")["coverage"] == 1  # opawa is its only leaf there
    assert node(city, "noted", "central") is None  # covers opawa and st-albans only
    assert node(city, "flat", "central")["coverage"] == 0


def test_unknown_place_is_not_found(city):
    with pytest.raises(NotFound):
        rollup(city, place_id="nowhere", on=DAY)


# --- dimensions ------------------------------------------------------------------------------


def test_dimension_filter_sums_matching_cells_and_counts_other_reports_as_zero(city):
    submit(
        city,
        "eqc",
        obs("visits", "opawa", "2020-01-05", 10, age="65+"),
        obs("visits", "opawa", "2020-01-12", 20, **{"age": "0-14"}),
        obs("visits", "opawa", "2020-01-19", 5, age="65+"),
        obs("visits", "st-albans", "2020-01-06", 30, **{"age": "0-14"}),
        obs("homes", "opawa", "2020-01-10", 50),
    )
    assert node(city, "visits")["value"] == 65
    filtered = node(city, "visits", age="65+")
    assert filtered["value"] == 15
    assert filtered["progress"] is None and filtered["target"] is None
    assert filtered["baseline"] is None and filtered["forecast"] is None
    assert filtered["status"] == "no_target"
    assert filtered["coverage"] == pytest.approx(2 / 3)  # riccarton never reported
    assert node(city, "visits", "st-albans", age="65+")["value"] == 0
    assert node(city, "homes", age="65+") is None  # homes has no age dimension


def test_filter_on_a_dimension_no_measure_declares_leaves_nothing(city):
    assert rollup(city, place_id="tiny", on=DAY, filters={"sex": "female"}).results
    assert (
        rollup(city, place_id="tiny", on=DAY, filters={"sex": "female"}).to_json()["results"] == []
    )


@pytest.mark.parametrize("filters", [{"colour": "red"}, {"age": "100+"}])
def test_unknown_dimension_or_value_is_refused(city, filters):
    with pytest.raises(TrackerError) as refused:
        rollup(city, place_id="tiny", on=DAY, filters=filters)
    assert refused.value.status == 400


# --- revisions -------------------------------------------------------------------------------


def test_a_value_is_its_latest_revision_and_a_retraction_uncovers_the_one_before(city):
    cache = RollupCache()
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    assert node(city, "homes", "opawa", cache=cache)["value"] == 20
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 25))
    assert node(city, "homes", "opawa", cache=cache)["value"] == 25
    submit(city, "eqc", obs("homes", "opawa", "2020-01-20", 40))
    assert node(city, "homes", "opawa", cache=cache)["value"] == 40
    submit(city, "eqc", obs("homes", "opawa", "2020-01-20", None))
    found = node(city, "homes", "opawa", cache=cache)
    assert (found["value"], found["as_of"]) == (25, "2020-01-10")


# --- rule 7: status --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "e", "expected"),
    [
        (Fraction(1), Fraction(1), "complete"),
        (Fraction(1), Fraction(0), "complete"),
        (Fraction(1, 4), Fraction(3, 10), "on_track"),  # exactly E − 0.05
        (Fraction(24, 100), Fraction(3, 10), "at_risk"),
        (Fraction(15, 100), Fraction(3, 10), "at_risk"),  # exactly E − 0.15
        (Fraction(14, 100), Fraction(3, 10), "off_track"),
        (Fraction(9, 10), Fraction(1, 2), "on_track"),
        (None, Fraction(1, 2), "no_data"),
    ],
)
def test_status_bands(p, e, expected):
    assert status(p, e) == expected


def test_status_compares_exact_values_on_the_band_edges(city):
    # In floating point 0.3 − 0.15 > 0.15, which would call st-albans off track.
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 25),  # 0.25 = E − 0.05
        obs("homes", "st-albans", "2020-01-10", 30),  # 0.15 = E − 0.15
        obs("homes", "riccarton", "2020-01-10", 42),  # 0.14
    )
    assert node(city, "homes", "opawa")["status"] == "on_track"
    assert node(city, "homes", "st-albans")["status"] == "at_risk"
    assert node(city, "homes", "riccarton")["status"] == "off_track"


# --- rule 8: stale ---------------------------------------------------------------------------


def test_stale_after_twice_the_frequency_at_leaves_and_when_every_leaf_is(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 20),
        obs("homes", "st-albans", "2020-02-15", 50),
    )
    assert node(city, "homes", "opawa", date(2020, 3, 10))["stale"] is False
    assert node(city, "homes", "opawa", date(2020, 3, 11))["stale"] is True
    assert node(city, "homes", "tiny", date(2020, 3, 11))["stale"] is False
    assert node(city, "homes", "tiny", date(2020, 4, 16))["stale"] is True
    assert node(city, "homes", "riccarton", date(2020, 4, 16))["stale"] is None


def test_weekly_measure_is_stale_after_fourteen_days(city):
    submit(city, "eqc", obs("visits", "opawa", "2020-01-05", 10, age="65+"))
    assert node(city, "visits", "opawa", date(2020, 1, 19))["stale"] is False
    assert node(city, "visits", "opawa", date(2020, 1, 20))["stale"] is True


@pytest.mark.parametrize(
    ("on", "frequency", "cutoff"),
    [
        (date(2020, 3, 11), "monthly", date(2020, 1, 11)),
        (date(2020, 4, 30), "monthly", date(2020, 2, 29)),
        (date(2021, 3, 31), "quarterly", date(2020, 9, 30)),
        (date(2021, 2, 28), "yearly", date(2019, 2, 28)),
        (date(2020, 1, 15), "weekly", date(2020, 1, 1)),
    ],
)
def test_stale_cutoff_counts_calendar_months(on, frequency, cutoff):
    assert stale_before(on, frequency) == cutoff


def test_months_before_clamps_to_the_end_of_a_shorter_month():
    assert months_before(date(2021, 3, 31), 1) == date(2021, 2, 28)
    assert months_before(date(2020, 1, 15), 2) == date(2019, 11, 15)


# --- rule 9: forecast ------------------------------------------------------------------------


def homes_at_opawa(session, *points):
    submit(session, "eqc", *(obs("homes", "opawa", day, value) for day, value in points))


def test_no_forecast_from_fewer_than_three_dates(city):
    homes_at_opawa(city, ("2020-01-01", 10), ("2020-01-11", 20))
    assert node(city, "homes", "opawa")["forecast"] is None


def test_forecast_is_the_day_the_fitted_line_reaches_the_target(city):
    homes_at_opawa(city, ("2020-01-01", 10), ("2020-01-11", 20), ("2020-01-21", 30))
    assert node(city, "homes", "opawa")["forecast"] == "2020-03-31"  # 10 + x = 100


def test_forecast_rounds_up_to_the_first_whole_day(city):
    homes_at_opawa(city, ("2020-01-01", 10), ("2020-01-11", 20), ("2020-01-21", 31))
    assert node(city, "homes", "opawa")["forecast"] == "2020-03-27"  # day 85.87 → 86


def test_forecast_uses_only_the_last_six_dates(city):
    homes_at_opawa(
        city,
        ("2020-01-01", 90),
        ("2020-01-02", 90),
        *((str(date(2020, 1, 1) + timedelta(days=10 * k)), 10 * k) for k in range(1, 7)),
    )
    assert node(city, "homes", "opawa", date(2020, 3, 1))["forecast"] == "2020-04-10"


def test_forecast_at_a_place_uses_every_date_one_of_its_leaves_reported(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-01", 10),
        obs("homes", "st-albans", "2020-01-06", 10),
        obs("homes", "opawa", "2020-01-11", 20),
    )
    # city: 10, 20, 30 on days 0, 5, 10; target 300 reached on day 145
    assert node(city, "homes")["forecast"] == "2020-05-25"
    assert node(city, "homes", "opawa")["forecast"] is None


def test_forecast_for_a_decreasing_measure(city):
    submit(
        city,
        "eqc",
        *(
            obs("unsewered", "opawa", d, v)
            for d, v in [("2020-01-01", 50), ("2020-01-11", 40), ("2020-01-21", 30)]
        ),
    )
    assert node(city, "unsewered", "opawa")["forecast"] == "2020-02-10"


@pytest.mark.parametrize(
    "points",
    [
        [("2020-01-01", 30), ("2020-01-11", 20), ("2020-01-21", 10)],  # moving away
        [("2020-01-01", 50), ("2020-01-11", 80), ("2020-01-21", 120)],  # already complete
        [("2020-01-01", 20), ("2020-01-11", 20), ("2020-01-21", 20)],  # flat
    ],
)
def test_no_forecast_when_moving_away_done_or_flat(city, points):
    homes_at_opawa(city, *points)
    assert node(city, "homes", "opawa")["forecast"] is None


def test_forecast_needs_progress():
    points = [(date(2020, 1, 1), 1.0), (date(2020, 1, 2), 2.0), (date(2020, 1, 3), 3.0)]
    assert forecast(points, value=3, target=None, progress_now=None) is None
    assert forecast(points, value=3, target=5, progress_now=Fraction(1, 2)) == date(2020, 1, 5)


# --- observations after the day, caching ------------------------------------------------------


def test_observations_dated_after_the_day_change_nothing(city):
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    before = rollup(city, place_id="tiny", on=DAY).to_json()
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-02-01", 90),
        obs("homes", "riccarton", "2020-02-01", 9),
    )
    assert rollup(city, place_id="tiny", on=DAY).to_json() == before


def count_statements(session):
    """A list that grows by one for every SQL statement the session's engine runs."""
    statements = []
    event.listen(
        session.get_bind(),
        "before_cursor_execute",
        lambda _c, _cur, sql, *_a: statements.append(sql),
    )
    return statements


def test_a_warm_request_runs_one_query(city):
    cache = RollupCache()
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    first = rollup(city, place_id="tiny", on=DAY, cache=cache)
    statements = count_statements(city)
    assert rollup(city, place_id="tiny", on=DAY, cache=cache) == first
    assert len(statements) == 1


def test_a_write_recomputes_only_the_measures_it_changed(city, monkeypatch):
    cache = RollupCache()
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    rollup(city, place_id="tiny", on=DAY, cache=cache)
    queried = []
    original = rollup_leaves._query_cells

    def spy(session, measures, *args):
        queried.append(sorted(m.id for m in measures))
        return original(session, measures, *args)

    monkeypatch.setattr(rollup_leaves, "_query_cells", spy)
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 30))
    assert node(city, "homes", cache=cache)["value"] == 30
    assert queried == [["homes"]]


def test_caches_of_two_processes_see_each_others_writes(city, database_url):
    first, second = RollupCache(), RollupCache()
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    assert node(city, "homes", cache=first)["value"] == 20
    assert node(city, "homes", cache=second)["value"] == 20
    submit(city, "eqc", obs("homes", "st-albans", "2020-01-10", 5))
    assert node(city, "homes", cache=first)["value"] == 25
    assert node(city, "homes", cache=second)["value"] == 25


# --- series, explain, timeliness ------------------------------------------------------------------


def test_series_has_one_point_per_date_with_expected_in_units(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 20),
        obs("homes", "st-albans", "2020-01-15", 50),
        obs("homes", "opawa", "2020-01-20", 30),
    )
    assert measure_series(city, measure_id="homes", place_id="tiny") == [
        {"date": "2020-01-10", "value": 20, "expected": 9.0},  # E 0.09 of 0 → 100
        {"date": "2020-01-15", "value": 70, "expected": 42.0},  # E 0.14 of 0 → 300
        {"date": "2020-01-20", "value": 80, "expected": 57.0},
    ]


def test_flow_series_accumulates_and_has_no_expected_without_a_target(city):
    submit(
        city,
        "eqc",
        obs("visits", "opawa", "2020-01-05", 10, age="65+"),
        obs("visits", "opawa", "2020-01-12", 20, **{"age": "0-14"}),
    )
    assert measure_series(city, measure_id="visits", place_id="opawa") == [
        {"date": "2020-01-05", "value": 10, "expected": None},
        {"date": "2020-01-12", "value": 30, "expected": None},
    ]
    assert measure_series(city, measure_id="visits")[0]["expected"] == 40.0  # city: of 1000


def test_series_refuses_unknown_measure_or_place(city):
    with pytest.raises(NotFound):
        measure_series(city, measure_id="nothing", place_id="tiny")
    with pytest.raises(NotFound):
        measure_series(city, measure_id="homes", place_id="nowhere")


def test_explain_a_measure_lists_each_leaf_value_with_its_source(city):
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 25))
    feed = Feed(id="eqc-feed", agency_id="eqc", url="https://example.org/x.csv", format="csv")
    city.add(feed)
    city.flush()
    run = FeedRun(feed_id=feed.id, status="ok")
    city.add(run)
    city.flush()
    submit(
        city,
        "eqc",
        obs("homes", "st-albans", "2020-01-12", 7),
        channel="feed",
        feed_run_id=run.id,
        partial=True,
    )
    trail = explain(city, node_id="homes", place_id="tiny", on=DAY)
    assert trail["node"]["value"] == 32
    assert trail["children"] is None
    leaves = {leaf["place"]: leaf for leaf in trail["leaves"]}
    assert set(leaves) == {"opawa", "st-albans", "riccarton"}
    (opawa,) = leaves["opawa"]["observations"]
    assert (opawa["date"], opawa["value"], opawa["revisions"]) == ("2020-01-10", 25, 2)
    assert (opawa["agency"], opawa["channel"], opawa["feed_run"]) == ("eqc", "api", None)
    assert opawa["received"].endswith("Z")
    (albans,) = leaves["st-albans"]["observations"]
    assert (albans["channel"], albans["feed_run"]) == ("feed", run.id)
    assert leaves["riccarton"] == {
        "place": "riccarton",
        "value": None,
        "counted": False,
        "baseline": 0,
        "target": 300,
        "observations": [],
        "works": [],
        "problem": None,
    }


def test_explain_a_flow_lists_every_observation_summed(city):
    submit(
        city,
        "eqc",
        obs("visits", "opawa", "2019-12-20", 100, age="65+"),
        obs("visits", "opawa", "2020-01-05", 10, age="65+"),
        obs("visits", "opawa", "2020-01-12", 20, **{"age": "0-14"}),
    )
    trail = explain(city, node_id="visits", place_id="opawa", on=DAY)
    (leaf,) = trail["leaves"]
    assert [(o["date"], o["dims"], o["value"]) for o in leaf["observations"]] == [
        ("2020-01-05", {"age": "65+"}, 10),
        ("2020-01-12", {"age": "0-14"}, 20),
    ]


def test_explain_an_output_lists_children_with_weights_and_whether_they_counted(city):
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 50))
    trail = explain(city, node_id="eqc-repairs", place_id="tiny", on=DAY)
    assert trail["leaves"] is None
    assert [(c["id"], c["weight"], c["progress"], c["counted"]) for c in trail["children"]] == [
        ("homes", 1, 0.5, True),
        ("unsewered", 2, None, False),
        ("visits", 1, None, False),
    ]
    with pytest.raises(NotFound):
        explain(city, node_id="nothing", place_id="tiny", on=DAY)


def test_timeliness_counts_reports_per_place_and_period(city):
    submit(
        city,
        "eqc",
        obs("homes", "opawa", "2020-01-10", 20),
        obs("homes", "opawa", "2020-01-20", 30),  # same month: one report
        obs("homes", "st-albans", "2020-02-15", 50),
        obs("homes", "riccarton", "2020-03-02", 50),  # March is not over on the 15th
        obs("visits", "opawa", "2020-01-05", 1, age="65+"),
        obs("visits", "opawa", "2020-01-05", 2, **{"age": "0-14"}),
        obs("visits", "opawa", "2020-01-06", 3, age="65+"),  # week 0: one report
        obs("visits", "opawa", "2020-01-12", 4, age="65+"),  # week 1
        obs("visits", "st-albans", "2020-01-08", 5, age="65+"),  # week 1
    )
    rows = {
        row["measure"]: row for row in timeliness(city, agency_id="eqc", today=date(2020, 3, 15))
    }
    assert list(rows) == ["homes", "unsewered", "visits"]
    homes = rows["homes"]
    assert (homes["periods"], homes["places"], homes["expected"]) == (2, 3, 6)
    assert (homes["received"], homes["on_time"]) == (2, 0)  # received years later
    weekly = {r["measure"]: r for r in timeliness(city, agency_id="eqc", today=date(2020, 1, 15))}
    assert (weekly["visits"]["expected"], weekly["visits"]["received"]) == (6, 3)


def test_timeliness_on_time_means_by_the_end_of_the_following_period(city):
    last_year = date.today().year - 1
    submit(
        city,
        "council",
        obs("survey", "opawa", f"{last_year}-12-31", 5),  # arrives this year: on time
        obs("survey", "st-albans", "2020-06-30", 5),  # arrives years later: late
    )
    (survey,) = [r for r in timeliness(city, agency_id="council") if r["measure"] == "survey"]
    assert survey["periods"] == last_year - 2020 + 1
    assert (survey["received"], survey["on_time"]) == (2, 1)


def test_timeliness_of_an_unknown_agency_is_not_found(city):
    with pytest.raises(NotFound):
        timeliness(city, agency_id="nobody")


@pytest.mark.parametrize(
    ("frequency", "day", "index"),
    [
        ("weekly", date(2020, 1, 7), 0),
        ("weekly", date(2020, 1, 8), 1),
        ("monthly", date(2020, 2, 29), 2020 * 12 + 1),
        ("quarterly", date(2020, 4, 1), 2020 * 4 + 1),
        ("yearly", date(2020, 12, 31), 2020),
    ],
)
def test_period_index(frequency, day, index):
    assert period_index(frequency, day, date(2020, 1, 1)) == index


def test_a_write_reuses_the_definitions_and_a_tree_change_reads_them_again(city, tmp_path):
    from tracker.rollup import load_definitions
    from tracker.tree import load_tree as read_tree_file
    from tracker.tree import store_tree

    cache = RollupCache()
    before = load_definitions(city, cache)
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    after = load_definitions(city, cache)
    assert after.nodes is before.nodes and after.places is before.places
    assert after.measures["homes"].data_version == before.measures["homes"].data_version + 1
    assert after.measures["homes"].places is before.measures["homes"].places
    assert after.measures["flat"] is before.measures["flat"]

    boundaries = (CITY_TREE.parent / "../tiny_city/neighbourhoods.geojson").resolve()
    text = CITY_TREE.read_text(encoding="utf-8")
    changed = text.replace("title: Homes repaired", "title: Homes repaired or rebuilt", 1)
    assert changed != text
    edited = tmp_path / "city.yaml"
    edited.write_text(
        changed.replace("../tiny_city/neighbourhoods.geojson", str(boundaries)), encoding="utf-8"
    )
    store_tree(city, read_tree_file(edited))
    city.commit()
    reread = load_definitions(city, cache)
    assert reread.nodes is not after.nodes
    assert reread.nodes["homes"].title == "Homes repaired or rebuilt"
    assert node(city, "homes", cache=cache)["value"] == 20


def test_timeliness_is_kept_until_one_of_the_agencys_measures_is_written(city):
    cache = RollupCache()
    today = date(2020, 3, 15)
    submit(city, "eqc", obs("homes", "opawa", "2020-01-10", 20))
    first = timeliness(city, agency_id="eqc", today=today, cache=cache)
    counted = []
    event.listen(city.get_bind(), "before_cursor_execute", lambda *a: counted.append(a[2]))
    assert timeliness(city, agency_id="eqc", today=today, cache=cache) == first
    assert not any("first_received_at" in sql for sql in counted)  # nothing counted again
    submit(city, "eqc", obs("homes", "st-albans", "2020-02-15", 50))
    (homes,) = [
        r
        for r in timeliness(city, agency_id="eqc", today=today, cache=cache)
        if r["measure"] == "homes"
    ]
    assert homes["received"] == 2
