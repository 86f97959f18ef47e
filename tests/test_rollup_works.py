"""Measures derived from works (CONTRACT §6): counts and quantities of completed works.

The test city (fixtures/rollup/works.yaml) has opawa (172.60–172.61 E) and st-albans
(172.61–172.62 E) side by side between 43.54 and 43.53 S; riccarton lies north of opawa.
"""

from datetime import date
from pathlib import Path

import pytest
from sqlmodel import Session

from tracker import create_app
from tracker.cli import initialise
from tracker.rollup import RollupCache, explain, measure_series, rollup, timeliness
from tracker.settings import Settings
from tracker.submissions import submit_works

TREE = Path(__file__).parent / "fixtures" / "rollup" / "works.yaml"
DAY = date(2014, 6, 30)

# 0.005° in opawa and 0.008° in st-albans along one parallel: shares 5/13 and 8/13.
ACROSS = {"type": "LineString", "coordinates": [[172.605, -43.535], [172.618, -43.535]]}
IN_OPAWA = {"type": "Point", "coordinates": [172.605, -43.535]}
IN_RICCARTON = {"type": "Point", "coordinates": [172.605, -43.525]}
IN_PARK = {"type": "Point", "coordinates": [172.615, -43.525]}


@pytest.fixture
def settings(database_url, tmp_path):
    return Settings(
        database_url=database_url,
        tree=TREE,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        _env_file=None,
    )


@pytest.fixture
def city(settings):
    engine, _ = initialise(settings)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


def work(ref, geometry, measure, *, status="complete", end="2014-03-01", quantity=None):
    row = {
        "id": ref,
        "title": f"Work {ref}",
        "status": status,
        "geometry": geometry,
        "actual_start": "2014-01-15",
        "measure": measure,
    }
    if status == "complete":
        row["actual_end"] = end
    if quantity is not None:
        row["quantity"] = quantity
    return row


def send(session, *rows):
    submit_works(session, agency_id="council", rows=list(rows), channel="api")
    session.commit()


def measure(session, measure_id, place="tiny", on=DAY, cache=None):
    answer = rollup(session, place_id=place, on=on, cache=cache)
    return answer.find(measure_id)


def test_quantity_is_split_by_length_in_nztm(city):
    send(city, work("w1", ACROSS, "pipe-km", quantity=1.3))
    opawa = measure(city, "pipe-km", "opawa")
    st_albans = measure(city, "pipe-km", "st-albans")
    assert opawa.measure.value == pytest.approx(0.5, rel=0.01)
    assert st_albans.measure.value == pytest.approx(0.8, rel=0.01)
    at_city = measure(city, "pipe-km")
    assert at_city.measure.value == pytest.approx(1.3)
    assert at_city.measure.as_of == date(2014, 3, 1)
    assert at_city.progress == pytest.approx(1.3 / 10)


def test_a_counted_work_counts_once_where_most_of_it_lies(city):
    send(city, work("ps1", ACROSS, "pump-stations"), work("ps2", IN_OPAWA, "pump-stations"))
    assert measure(city, "pump-stations", "st-albans").measure.value == 1
    assert measure(city, "pump-stations", "opawa").measure.value == 1
    at_city = measure(city, "pump-stations")
    assert at_city.measure.value == 2
    # Per-place targets over the two neighbourhoods that have a value: 2 + 2.
    assert at_city.measure.target == 4
    assert at_city.coverage == pytest.approx(2 / 3)


def test_only_complete_works_ended_by_the_day_count(city):
    send(
        city,
        work("a", IN_OPAWA, "pump-stations", end="2014-03-01"),
        work("b", IN_OPAWA, "pump-stations", end="2014-09-01"),
        work("c", IN_OPAWA, "pump-stations", status="in_progress"),
        work("d", IN_OPAWA, "pump-stations", status="cancelled"),
    )
    assert measure(city, "pump-stations", "opawa", date(2014, 2, 28)).measure.value is None
    assert measure(city, "pump-stations", "opawa", date(2014, 3, 1)).measure.value == 1
    assert measure(city, "pump-stations", "opawa", date(2014, 9, 1)).measure.value == 2


def test_a_work_outside_the_measures_places_is_left_out(city):
    send(city, work("park", IN_PARK, "pump-stations"), work("ric", IN_RICCARTON, "pump-stations"))
    at_city = measure(city, "pump-stations")
    assert at_city.measure.value == 1
    assert measure(city, "pump-stations", "red-zone-park") is not None
    assert measure(city, "pump-stations", "red-zone-park").measure.value is None


def test_each_works_write_shows_at_once_and_a_reopened_work_stops_counting(city):
    cache = RollupCache()
    send(city, work("x", IN_OPAWA, "pump-stations"))
    assert measure(city, "pump-stations", cache=cache).measure.value == 1
    send(city, work("y", IN_RICCARTON, "pump-stations"))
    assert measure(city, "pump-stations", cache=cache).measure.value == 2
    send(city, work("x", IN_OPAWA, "pump-stations", status="in_progress"))
    # The same cache: a works write bumps the measure's data version.
    assert measure(city, "pump-stations", cache=cache).measure.value == 1
    assert measure(city, "pump-stations").measure.value == 1


def test_explain_lists_every_work_behind_a_figure(city):
    send(
        city,
        work("w1", ACROSS, "pipe-km", quantity=1.3),
        work("w2", IN_OPAWA, "pipe-km", quantity=0.2, end="2014-04-01"),
        work("w3", IN_OPAWA, "pipe-km", quantity=9, status="in_progress"),
    )
    trail = explain(city, node_id="pipe-km", on=DAY)
    leaves = {leaf["place"]: leaf for leaf in trail["leaves"]}
    opawa = leaves["opawa"]
    assert [w["id"] for w in opawa["works"]] == ["council/w1", "council/w2"]
    assert opawa["observations"] == []
    assert sum(w["amount"] for w in opawa["works"]) == pytest.approx(opawa["value"])
    assert opawa["works"][0]["share"] == pytest.approx(5 / 13, rel=0.01)
    assert opawa["works"][0]["channel"] == "api"
    assert [w["id"] for w in leaves["st-albans"]["works"]] == ["council/w1"]
    assert leaves["riccarton"]["works"] == [] and leaves["riccarton"]["counted"] is False
    total = sum(leaf["value"] for leaf in trail["leaves"] if leaf["counted"])
    assert trail["node"]["value"] == pytest.approx(total)


def test_series_is_the_running_total_of_completions(city):
    send(
        city,
        work("a", IN_OPAWA, "pump-stations", end="2014-03-01"),
        work("b", IN_RICCARTON, "pump-stations", end="2014-05-01"),
        work("c", IN_OPAWA, "pump-stations", end="2014-05-01"),
    )
    points = measure_series(city, measure_id="pump-stations")
    assert [(p["date"], p["value"]) for p in points] == [("2014-03-01", 1), ("2014-05-01", 3)]
    # Expected values use the targets of the neighbourhoods with a value on that date.
    assert points[0]["expected"] == pytest.approx(2 * (59 / 364))


def test_works_derived_measures_are_listed_with_nothing_due(city):
    send(city, work("a", IN_OPAWA, "pump-stations"))
    rows = timeliness(city, agency_id="council", today=DAY)
    assert [r["measure"] for r in rows] == ["pipe-km", "pump-stations"]
    assert all(
        (r["periods"], r["expected"], r["received"], r["on_time"]) == (0, 0, 0, 0) for r in rows
    )


def test_the_explain_route_serves_the_works_trail(settings, city):
    send(city, work("w1", ACROSS, "pipe-km", quantity=1.3))
    app = create_app(settings)
    answer = app.test_client().get("/api/v1/explain?node=pipe-km&place=opawa&date=2014-06-30")
    app.extensions["engine"].dispose()
    assert answer.status_code == 200, answer.get_json()
    (leaf,) = answer.get_json()["leaves"]
    assert leaf["place"] == "opawa"
    assert [(w["id"], w["actual_end"], w["quantity"]) for w in leaf["works"]] == [
        ("council/w1", "2014-03-01", 1.3)
    ]
    assert leaf["value"] == pytest.approx(leaf["works"][0]["amount"])
