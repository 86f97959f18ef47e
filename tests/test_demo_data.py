"""The demo generators, without a database: deterministic, valid for the tree, plausible."""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from itertools import product
from pathlib import Path
from types import SimpleNamespace

import pytest

from tracker import submissions
from tracker.demo import (
    LATE_END,
    NOTE,
    TITLE_PREFIX,
    demo_observations,
    demo_works,
    load_demo,
    measure_agencies,
    report_dates,
    series_end,
)
from tracker.tree import load_tree

TREE = Path(__file__).resolve().parent.parent / "results_tree.yaml"
RECKONING = date(2016, 12, 31)  # the end of the SCIRT programme and of most targets
STATUSES = {"planned", "in_progress", "complete", "cancelled"}


@dataclass(frozen=True)
class FakeStreet:
    """The shape demo_works reads from tracker.places street records."""

    id: str
    name: str
    place_ids: tuple[str, ...]
    length_m: float


STREETS = [
    FakeStreet("avonside-drive", "Avonside Drive", ("avonside", "dallington"), 3200.0),
    FakeStreet("gayhurst-road", "Gayhurst Road", ("dallington",), 1400.0),
    FakeStreet("riccarton-road", "Riccarton Road", ("riccarton", "upper-riccarton"), 2900.0),
    FakeStreet("london-street-lyttelton", "London Street", ("lyttelton",), 650.0),
    FakeStreet("esplanade", "Esplanade", ("sumner",), 1800.0),
    FakeStreet("rue-lavaud", "Rue Lavaud", ("akaroa",), 900.0),
    FakeStreet("hagley-avenue", "Hagley Avenue", ("hagley-park", "addington"), 1100.0),
    FakeStreet("riccarton-avenue", "Riccarton Avenue", ("hagley-park",), 1500.0),
]


@pytest.fixture(scope="module")
def tree():
    """The project's real results tree, checked against its real boundaries."""
    return load_tree(TREE)


@pytest.fixture(scope="module")
def observations(tree):
    """The demo observations, generated once for the module."""
    return demo_observations(tree)


@pytest.fixture(scope="module")
def works(tree):
    """The demo works on the fake streets, generated once for the module."""
    return demo_works(tree, STREETS)


@pytest.fixture(scope="module")
def measures(tree):
    """Measures by id."""
    return {m.id: m for m in tree.measures()}


def _rows(observations):
    """Every (agency, row) pair."""
    return [(agency, row) for agency, rows in observations.items() for row in rows]


def _city_value(measure, rows, when: date) -> float:
    """The city value of a sum measure on `when` (CONTRACT §3 rules 1 and 2)."""
    if measure.kind == "flow":
        return sum(
            r["value"] for r in rows if measure.start <= date.fromisoformat(r["date"]) <= when
        )
    latest: dict[tuple, tuple[str, float]] = {}
    for row in rows:
        if row["date"] > when.isoformat():
            continue
        cell = (row["place"], tuple(sorted(row.get("dims", {}).items())))
        if cell not in latest or latest[cell][0] < row["date"]:
            latest[cell] = (row["date"], row["value"])
    return sum(value for _, value in latest.values())


def _schedule(measure) -> set[str]:
    """Every date a demo report of the measure may carry."""
    return {
        d.isoformat() for d in report_dates(measure.frequency, measure.start, series_end(measure))
    }


def _city_target(measure) -> float:
    """A sum measure's city target: the number, or the sum of the map."""
    return sum(measure.target.values()) if isinstance(measure.target, dict) else measure.target


def test_observations_are_the_same_every_run(tree, observations):
    assert demo_observations(tree) == observations


def test_works_are_the_same_every_run(tree, works):
    assert demo_works(tree, STREETS) == works


def test_observations_stay_small_enough_to_load_fast(observations):
    assert 20_000 < len(_rows(observations)) < 150_000


def test_every_agency_has_an_entry(tree, observations, works):
    agencies = {agency.id for agency in tree.agencies}
    assert set(observations) == agencies
    assert set(works) == agencies


def test_observation_rows_are_valid_for_the_tree(tree, observations, measures):
    owners = measure_agencies(tree)
    for agency, row in _rows(observations):
        measure = measures[row["measure"]]
        assert owners[measure.id] == agency
        assert measure.source != "works", "works-derived measures are never submitted"
        assert row["place"] in measure.places
        when = date.fromisoformat(row["date"])
        assert measure.start <= when <= series_end(measure) <= LATE_END
        assert isinstance(row["value"], float) and math.isfinite(row["value"])
        assert row["value"] >= 0
        assert row["note"] == NOTE
        assert set(row) <= {"measure", "place", "date", "value", "dims", "note"}
        assert set(row.get("dims", {})) == set(measure.dimensions)


def test_dimensioned_measures_report_every_declared_cell(tree, observations, measures):
    cells = defaultdict(set)
    for _, row in _rows(observations):
        if measures[row["measure"]].dimensions:
            key = (row["measure"], row["place"], row["date"])
            cells[key].add(tuple(sorted(row["dims"].items())))
    assert cells, "the tree has dimensioned measures"
    for (measure_id, _, _), seen in cells.items():
        names = measures[measure_id].dimensions
        every = {
            tuple(sorted(zip(names, combo, strict=True)))
            for combo in product(*(tree.dimensions[name] for name in names))
        }
        assert seen == every


@pytest.mark.parametrize(
    ("frequency", "start", "end", "expected"),
    [
        ("weekly", date(2011, 9, 1), date(2011, 9, 20), ["2011-09-07", "2011-09-14"]),
        (
            "monthly",
            date(2011, 9, 1),
            date(2011, 11, 30),
            ["2011-09-30", "2011-10-31", "2011-11-30"],
        ),
        (
            "quarterly",
            date(2011, 9, 1),
            date(2012, 3, 31),
            ["2011-09-30", "2011-12-31", "2012-03-31"],
        ),
        ("yearly", date(2012, 9, 1), date(2014, 6, 30), ["2012-12-31", "2013-12-31"]),
    ],
)
def test_reports_are_dated_at_the_end_of_each_period(frequency, start, end, expected):
    assert [d.isoformat() for d in report_dates(frequency, start, end)] == expected


def test_reports_fall_on_the_measure_frequency(observations, measures):
    schedules = {m.id: _schedule(m) for m in measures.values()}
    for _, row in _rows(observations):
        assert row["date"] in schedules[row["measure"]]


def test_cumulative_series_never_fall(observations, measures):
    series = defaultdict(list)
    for _, row in _rows(observations):
        if measures[row["measure"]].kind == "cumulative":
            cell = tuple(sorted(row.get("dims", {}).items()))
            series[(row["measure"], row["place"], cell)].append((row["date"], row["value"]))
    assert series
    for points in series.values():
        values = [value for _, value in sorted(points)]
        assert values == sorted(values)


@pytest.mark.parametrize(
    "measure_id",
    [
        "homes-repaired",
        "red-zone-offers-made",
        "red-zone-offers-accepted",
        "stormwater-pipe-relaid",
        "water-pipe-relaid",
        "road-rebuilt",
        "scirt-projects-completed",
        "road-defects-repaired",
        "hardship-assistance-people",
    ],
)
def test_city_totals_land_near_the_targets_at_the_end_of_2016(observations, measures, measure_id):
    measure = measures[measure_id]
    rows = [row for _, row in _rows(observations) if row["measure"] == measure_id]
    assert _city_value(measure, rows, RECKONING) == pytest.approx(_city_target(measure), rel=0.15)


def test_decreasing_measure_heads_below_its_baseline(observations, measures):
    measure = measures["households-without-sewerage"]
    rows = [row for _, row in _rows(observations) if row["measure"] == measure.id]
    start = sum(measure.baseline.values())
    assert _city_value(measure, rows, measure.due) < 0.1 * start


def test_some_places_never_report_and_some_periods_are_missing(observations, measures):
    reported = defaultdict(set)
    dates = defaultdict(set)
    for _, row in _rows(observations):
        reported[row["measure"]].add(row["place"])
        dates[(row["measure"], row["place"])].add(row["date"])
    silent = [m for m in reported if reported[m] < set(measures[m].places)]
    assert len(silent) >= 3
    schedules = {m.id: _schedule(m) for m in measures.values()}
    gappy = [(m, p) for (m, p), seen in dates.items() if seen < schedules[m]]
    assert len(gappy) > 0.1 * len(dates)


def test_late_measures_report_into_the_2020s(observations, measures):
    latest = defaultdict(str)
    for _, row in _rows(observations):
        latest[row["measure"]] = max(latest[row["measure"]], row["date"])
    assert latest["quality-of-life-good"] >= "2024-01-01"
    assert latest["homes-repaired"] >= "2019-01-01"


def test_works_dates_and_statuses_are_consistent(works):
    all_works = [work for rows in works.values() for work in rows]
    assert all_works
    for work in all_works:
        assert work["status"] in STATUSES
        assert work["title"].startswith(TITLE_PREFIX)
        assert work["planned_start"] <= work["planned_end"]
        if work["status"] == "complete":
            assert work["actual_start"] <= work["actual_end"]
        else:
            assert "actual_end" not in work
        if work["status"] in ("planned", "cancelled"):
            assert "actual_start" not in work


def test_work_ids_are_unique_per_agency(works):
    for agency, rows in works.items():
        ids = [work["id"] for work in rows]
        assert len(ids) == len(set(ids))
        assert all(work_id.startswith(f"{agency}-") for work_id in ids)


def test_works_name_only_their_agency_works_measures_within_its_places(tree, works, measures):
    owners = measure_agencies(tree)
    streets = {street.id: street for street in STREETS}
    for agency, rows in works.items():
        for work in rows:
            street = streets[work["street"]]
            assert "hagley-park" not in street.place_ids, "nothing is tracked in the park"
            if "measure" in work:
                measure = measures[work["measure"]]
                assert measure.source == "works"
                assert owners[measure.id] == agency
                assert set(street.place_ids) <= set(measure.places)


def test_works_mix_finished_under_way_and_planned(works):
    statuses = {work["status"] for rows in works.values() for work in rows}
    assert statuses == STATUSES


def test_completed_works_add_up_to_the_published_totals(works, measures):
    scirt = works["scirt"]
    done = [w for w in scirt if w["status"] == "complete" and w["actual_end"] <= "2016-12-31"]
    km = sum(w["quantity"] for w in done if w.get("measure") == "wastewater-pipe-relaid")
    stations = sum(1 for w in done if w.get("measure") == "pump-stations-rebuilt")
    assert km == pytest.approx(measures["wastewater-pipe-relaid"].target, rel=0.15)
    assert stations == pytest.approx(measures["pump-stations-rebuilt"].target, rel=0.15)


def test_load_demo_sends_every_row_through_the_write_path(monkeypatch, tree, observations, works):
    calls = []

    def recorder(kind):
        """A stand-in for a submissions function that accepts every row."""

        def submit(session, *, agency_id, rows, channel):
            calls.append((kind, agency_id, channel, len(rows)))
            return SimpleNamespace(accepted=len(rows))

        return submit

    monkeypatch.setattr(submissions, "submit_observations", recorder("observations"))
    monkeypatch.setattr(submissions, "submit_works", recorder("works"), raising=False)
    counts = load_demo(object(), tree, STREETS)
    assert counts == {
        "observations": len(_rows(observations)),
        "works": sum(len(rows) for rows in works.values()),
    }
    assert {channel for _, _, channel, _ in calls} == {"demo"}
    assert {(kind, agency) for kind, agency, _, _ in calls} == {
        ("observations", agency) for agency, rows in observations.items() if rows
    } | {("works", agency) for agency, rows in works.items() if rows}
