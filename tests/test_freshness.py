"""The data stamp that cached maps and pages are keyed by: it moves with every change a
page could show, and only then."""

import json
import shutil
from pathlib import Path

import pytest
from sqlmodel import Session

from tracker.cli import initialise
from tracker.freshness import data_stamp
from tracker.settings import Settings
from tracker.submissions import submit_observations

TINY = Path(__file__).parent / "fixtures" / "tiny_city"


@pytest.fixture
def city(database_url, tmp_path) -> Settings:
    """The tiny city in a folder of its own, which the tests edit."""
    folder = tmp_path / "city"
    shutil.copytree(TINY, folder)
    return Settings(
        database_url=database_url,
        tree=folder / "tree.yaml",
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        _env_file=None,
    )


def stamp_after_init(settings: Settings) -> str:
    engine, _ = initialise(settings)
    with Session(engine) as session:
        stamp = data_stamp(session)
    engine.dispose()
    return stamp


def test_the_stamp_stays_when_nothing_changed(city):
    assert stamp_after_init(city) == stamp_after_init(city)


def test_a_write_moves_the_stamp(city):
    before = stamp_after_init(city)
    engine, _ = initialise(city)
    with Session(engine) as session:
        row = {"measure": "homes-repaired", "place": "opawa", "date": "2014-01-31", "value": 3}
        submit_observations(session, agency_id="eqc", rows=[row], channel="api")
        session.commit()
        assert data_stamp(session) != before
    engine.dispose()


def test_a_renamed_agency_moves_the_stamp(city):
    before = stamp_after_init(city)
    text = city.tree.read_text(encoding="utf-8")
    city.tree.write_text(text.replace("name: City Council", "name: The Council"), "utf-8")
    assert stamp_after_init(city) != before


def test_a_moved_street_moves_the_stamp(city):
    before = stamp_after_init(city)
    path = city.tree.parent / "streets.geojson"
    streets = json.loads(path.read_text(encoding="utf-8"))
    line = streets["features"][0]["geometry"]["coordinates"]
    streets["features"][0]["geometry"]["coordinates"] = json.loads(
        json.dumps(line).replace("-43.5", "-43.5001")
    )
    path.write_text(json.dumps(streets), encoding="utf-8")
    assert stamp_after_init(city) != before
