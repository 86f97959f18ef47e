"""The data stamp that cached maps and pages are keyed by: it moves with every change a
page could show, and only then."""

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
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


def test_an_agency_renamed_to_a_name_as_long_moves_the_stamp(city):
    before = stamp_after_init(city)
    text = city.tree.read_text(encoding="utf-8")
    city.tree.write_text(text.replace("name: City Council", "name: Town Council"), "utf-8")
    assert stamp_after_init(city) != before


def test_a_new_timezone_for_the_city_moves_the_stamp(city):
    before = stamp_after_init(city)
    text = city.tree.read_text(encoding="utf-8")
    city.tree.write_text(
        text.replace("city: {id: tiny,", "city: {id: tiny, timezone: Pacific/Chatham,"), "utf-8"
    )
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


# --- participation: every decision a page shows moves the stamp, never back --------------


def _stamps(app, steps) -> list[str]:
    """The stamp before and after each step(session, settings), each step committed."""
    engine, settings = app.extensions["engine"], app.config["SETTINGS"]
    seen = []
    with app.app_context(), Session(engine) as session:
        seen.append(data_stamp(session))
        for step in steps:
            step(session, settings)
            session.commit()
            seen.append(data_stamp(session))
    return seen


def test_comment_moderation_never_returns_the_stamp_to_an_earlier_value(app):
    """Published {1, 4}, then reject 1, publish 2 and 3, reject 4: the published set is
    {2, 3}, of the same count and id sum as {1, 4}; the stamp must still be new."""
    from tracker.comments import find_target, publish, reject, submit_comment
    from tracker.models import Comment

    with Session(app.extensions["engine"]) as session:
        from tracker.auth import create_user

        official = create_user(session, "o@example.org", "correct horse battery", "official", None)
        session.commit()
        official_id = official.id

    def comment(session, settings):
        target = find_target(session, "place", "opawa")
        submit_comment(session, target=target, author_name="Ana", email="ana@example.org",
                       body="Hello", settings=settings)  # fmt: skip

    def publish_(n):
        return lambda session, settings: publish(session, n, official_id, settings=settings)

    def reject_(n):
        return lambda session, settings: reject(session, n, official_id, "Off topic",
                                                settings=settings)  # fmt: skip

    steps = [comment] * 4 + [publish_(1), publish_(4), reject_(1), publish_(2), publish_(3),
                             reject_(4)]  # fmt: skip
    stamps = _stamps(app, steps)
    with Session(app.extensions["engine"]) as session:
        published = sorted(session.scalars(select(Comment.id).where(Comment.status == "published")))
    assert published == [2, 3]
    after_1_and_4, final = stamps[6], stamps[-1]
    assert final != after_1_and_4
    moderated = stamps[5:]
    assert len(set(moderated)) == len(moderated), "every decision moved the stamp"


def test_hiding_a_challenge_then_a_new_one_elsewhere_is_a_new_stamp(app):
    from page_helpers import store

    from tracker.auth import create_user
    from tracker.challenges import answer, hide, submit_challenge
    from tracker.models import Work

    done = {"status": "complete", "actual_start": "2014-01-01", "actual_end": "2014-02-01",
            "geometry": {"type": "Point", "coordinates": [172.605, -43.535]}}  # fmt: skip
    store(app, "council", works=[{"id": "w1", "title": "One", **done},
                                 {"id": "w2", "title": "Two", **done}])  # fmt: skip
    with Session(app.extensions["engine"]) as session:
        staff = create_user(session, "c@example.org", "correct horse battery", "agency", "council")
        session.commit()
        staff_id = staff.id
        w1, w2 = (session.scalars(select(Work.id).where(Work.ref == r)).one() for r in ("w1", "w2"))

    def challenge(work_id):
        def step(session, settings):
            submit_challenge(session, session.get(Work, work_id), note="Not done",
                             location=None, author_name="Bo", email="bo@example.org",
                             settings=settings)  # fmt: skip

        return step

    steps = [
        challenge(w1),
        lambda session, _: answer(
            session, 1, agency_id="council", user_id=staff_id, answer="We will look"
        ),
        lambda session, _: hide(session, 1, agency_id="council", user_id=staff_id),
        challenge(w2),
    ]
    stamps = _stamps(app, steps)
    assert len(set(stamps)) == len(stamps), stamps


def test_forgetting_a_resident_moves_the_stamp_even_when_a_new_comment_follows(app, client):
    """A deleted published comment, then another published: same count as before."""
    from tracker import residents
    from tracker.auth import create_user
    from tracker.comments import find_target, publish, submit_comment

    with Session(app.extensions["engine"]) as session:
        official = create_user(session, "o@example.org", "correct horse battery", "official", None)
        session.commit()
        official_id = official.id

    def comment(email, publish_id=None):
        def step(session, settings):
            target = find_target(session, "place", "opawa")
            made = submit_comment(session, target=target, author_name="Ana", email=email,
                                  body="Hello", settings=settings)  # fmt: skip
            session.flush()
            publish(session, made.id, official_id, settings=settings)

        return step

    steps = [
        comment("ana@example.org"),
        lambda session, _: residents.forget(session, "ana@example.org"),
        comment("bo@example.org"),
    ]
    stamps = _stamps(app, steps)
    assert len(set(stamps)) == len(stamps), stamps
