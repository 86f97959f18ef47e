"""Kept public pages after a write (tracker/web/page_cache.py): served as they were for up
to TRACKER_PAGE_STALE_SECONDS while one background thread rebuilds them, then new.

The other test modules run with the allowance at 0 (tests/conftest.py): these set it."""

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import request, session
from gunicorn_helpers import gunicorn
from page_helpers import map_scripts, page, store
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, select
from staff_helpers import add_user, sign_in

from tracker.web import page_cache

ROOT = Path(__file__).parent.parent


def work(ref: str) -> dict:
    return {
        "id": ref,
        "title": f"Work {ref}",
        "status": "planned",
        "geometry": {"type": "Point", "coordinates": [172.605, -43.535]},
    }


@pytest.fixture
def allowance(app, client, monkeypatch):
    """The default allowance, as a deployment has it, after the first view has warmed the
    worker's pages. An out-of-date page is rebuilt as soon as it is asked for, so that
    these tests need not wait out the gap between two builds (one test checks the gap)."""
    monkeypatch.setattr(page_cache, "REBUILD_SHARE", 0)
    app.config["SETTINGS"].page_stale_seconds = 120
    assert client.get("/").status_code == 200
    assert app.extensions["page_rebuilder"].wait(60)
    return app


def test_the_first_view_builds_the_city_result_measure_and_place_pages_ahead(app, client):
    from tracker.models import Node, Place

    app.config["SETTINGS"].page_stale_seconds = 30
    client.get("/streets/not-a-street")  # any public page starts it, even a 404
    assert app.extensions["page_rebuilder"].wait(60)
    kept = {key[0] for key in app.extensions["page_cache"]._entries}
    with Session(app.extensions["engine"]) as session:
        places = session.scalars(select(Place.id).where(Place.level != "city")).all()
        nodes = session.execute(select(Node.kind, Node.id)).all()
    pages = {"measure": "/measures/", "output": "/results/", "result": "/results/"}
    assert {k for k, _ in nodes} == set(pages)
    expected = {"/", *(f"/places/{p}" for p in places), *(pages[k] + n for k, n in nodes)}
    assert len(expected) > 10
    assert kept == expected
    before = lookups_here()
    assert client.get(f"/places/{places[0]}").status_code == 200
    assert lookups_here()["fresh"] == before.get("fresh", 0) + 1  # kept: no build


def test_without_an_allowance_nothing_is_built_ahead(app, client):
    client.get("/")
    assert app.extensions["page_rebuilder"].wait(1)
    assert {key[0] for key in app.extensions["page_cache"]._entries} == {"/"}


def test_what_every_page_needs_is_read_once_per_data_stamp(app):
    calls = []

    def count() -> int:
        calls.append(None)
        return len(calls)

    def ask() -> int:
        with app.test_request_context("/"):
            return page_cache.per_stamp("test", count)

    assert (ask(), ask()) == (1, 1)  # kept for the stamp
    store(app, "council", works=[work("new")])  # a write moves the stamp
    assert (ask(), ask()) == (2, 2)
    with app.test_request_context("/"):
        page_cache.current_stamp()
        store(app, "council", works=[work("newer")])  # after the request read the stamp
        # Not kept under the stamp the request read: that stamp no longer says what it saw.
        assert (page_cache.per_stamp("test", count), page_cache.per_stamp("test", count)) == (3, 4)
    assert (ask(), ask()) == (5, 5)
    # Anything that may write, or a signed-in visitor, sees the database as it is.
    with app.test_request_context("/", method="POST"):
        assert (page_cache.per_stamp("test", count), page_cache.per_stamp("test", count)) == (6, 7)
    with app.test_request_context("/"):
        session["uid"] = 1
        assert (page_cache.per_stamp("test", count), page_cache.per_stamp("test", count)) == (8, 9)
    # A fact that is None (no batch yet, say) is kept as well.
    nones = []
    with app.test_request_context("/"):
        assert page_cache.per_stamp("none", lambda: nones.append(1)) is None
        assert page_cache.per_stamp("none", lambda: nones.append(1)) is None
    assert len(nones) == 1


def lookups_here() -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {
        s.labels["result"]: s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == "tracker_page_cache_lookups_total"
    }


def wait_for_change(client, url: str, old: bytes, seconds: float = 20) -> bytes:
    """The page's HTML once it differs from `old` (the background rebuild landed)."""
    deadline = time.monotonic() + seconds
    while True:
        body = client.get(url).get_data()
        if body != old:
            return body
        assert time.monotonic() < deadline, f"{url} was never rebuilt"
        time.sleep(0.05)


def test_a_page_out_of_date_is_served_as_it_was_while_it_is_rebuilt(allowance, client):
    before = page(client, "/")
    old_html = client.get("/").get_data()
    store(allowance, "council", works=[work("new")])
    stale = client.get("/")
    assert stale.status_code == 200
    assert stale.get_data() == old_html  # at once, no rebuild in the request
    # Its map is the one it was built with, still kept by its address.
    assert all("Work new" not in script for script in map_scripts(before))
    new_html = wait_for_change(client, "/", old_html)
    assert new_html != old_html
    assert any("Work new" in script for script in map_scripts(page(client, "/")))


def test_signed_in_staff_see_a_write_at_once(allowance, client):
    add_user(allowance, "official@example.org", role="official", agency_id=None)
    anonymous = allowance.test_client()
    sign_in(client, "official@example.org")  # an audit event: the kept pages are rebuilt
    anonymous.get("/")
    assert allowance.extensions["page_rebuilder"].wait(30)
    old_html = anonymous.get("/").get_data()
    store(allowance, "council", works=[work("new")])
    assert any("Work new" in s for s in map_scripts(page(client, "/")))
    assert anonymous.get("/").get_data() == old_html  # residents: the kept page, for now


def test_a_page_further_behind_than_the_allowance_is_built_in_the_request(allowance, client):
    old_html = client.get("/").get_data()
    store(allowance, "council", works=[work("new")])
    allowance.config["SETTINGS"].page_stale_seconds = 0.2
    time.sleep(0.3)
    assert client.get("/").get_data() != old_html
    assert any("Work new" in s for s in map_scripts(page(client, "/")))


def test_after_an_idle_spell_the_first_view_is_up_to_date(allowance, client):
    """A write the process did not see happen (it read no stamp for an hour) may be an
    hour old: the page is built in the request, not served out of date."""
    old_html = client.get("/").get_data()
    for memo in allowance.extensions["stamp_memo"].values():
        memo["at"] -= 3600  # the last stamp reading, an hour ago
    raw = allowance.extensions["engine"].raw_connection()  # another process's write
    try:
        raw.cursor().execute(
            "INSERT INTO batch (agency_id, channel, received_at, accepted, revised, unchanged)"
            " VALUES ('eqc', 'api', '2026-01-01 00:00:00', 0, 0, 0)"
        )
        raw.commit()
    finally:
        raw.close()
    assert client.get("/").get_data() != old_html


def test_many_views_of_an_out_of_date_page_queue_one_rebuild(allowance, client, monkeypatch):
    client.get("/")
    release, builds = threading.Event(), []
    original = page_cache._build

    def slow_build(view, kwargs):
        if threading.current_thread().name == "page-rebuilder":
            builds.append(request.path)
            release.wait(10)
        return original(view, kwargs)

    monkeypatch.setattr(page_cache, "_build", slow_build)
    old_html = client.get("/").get_data()
    store(allowance, "council", works=[work("new")])
    answers = [client.get("/").get_data() for _ in range(20)]
    assert answers == [old_html] * 20
    release.set()
    wait_for_change(client, "/", old_html)
    assert builds == ["/"]


def test_visitors_who_need_a_page_built_at_once_wait_for_one_build(app, monkeypatch):
    """Without an allowance (as the other modules run) every page out of date is built in
    the request: by one of the visitors asking for it at the same time, not by each."""
    original, builds = page_cache._run_and_keep, []

    def slow(view, kwargs, key):
        builds.append(key[0])
        time.sleep(0.5)  # long enough for every visitor to arrive during it
        return original(view, kwargs, key)

    monkeypatch.setattr(page_cache, "_run_and_keep", slow)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: app.test_client().get("/places/opawa"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.get_data() for a in answers}) == 1
    assert builds == ["/places/opawa"]
    assert app.extensions["page_builds"] == {}  # nothing left claimed


def test_a_page_is_rebuilt_at_most_once_in_a_third_of_the_allowance(allowance, client, monkeypatch):
    monkeypatch.setattr(page_cache, "REBUILD_SHARE", 1 / 3)  # 40 s of the 120
    rebuilder = allowance.extensions["page_rebuilder"]
    store(allowance, "council", works=[work("first")])
    client.get("/")  # out of date: queued
    assert rebuilder.wait(30)  # builds what is queued at once
    first = client.get("/").get_data()
    assert any("Work first" in s for s in map_scripts(page(client, "/")))
    store(allowance, "council", works=[work("second")])
    # Built just now: its next build waits until 40 s after that (without the gap it
    # would be rebuilt at once, as the other tests show), and visitors get it as it is.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert client.get("/").get_data() == first
        time.sleep(0.1)
    assert rebuilder.wait(30)
    assert any("Work second" in s for s in map_scripts(page(client, "/")))


def test_a_failed_rebuild_keeps_the_old_page_and_is_logged(allowance, client, monkeypatch, caplog):
    old_html = client.get("/").get_data()

    def broken(view, kwargs):
        if threading.current_thread().name == "page-rebuilder":
            raise RuntimeError("the map would not draw")
        return original(view, kwargs)

    original = page_cache._build
    monkeypatch.setattr(page_cache, "_build", broken)
    store(allowance, "council", works=[work("new")])
    with caplog.at_level(logging.ERROR, logger="tracker.web.page_cache"):
        assert client.get("/").get_data() == old_html
        deadline = time.monotonic() + 10
        while not any("rebuilding the page / failed" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the failure was not logged"
            time.sleep(0.05)
    assert client.get("/").get_data() == old_html  # still served, another rebuild queued


def test_a_page_gone_after_a_write_stops_being_served_once_behind_the_allowance(
    allowance, client, monkeypatch
):
    """A rebuild that meets a 404 (say a place dropped by `tracker init`) keeps nothing;
    the request answers for itself once the kept page is too far behind."""
    from flask import abort

    assert client.get("/places/opawa").status_code == 200
    rebuilt = threading.Event()

    def gone(view, kwargs):
        if threading.current_thread().name == "page-rebuilder":
            rebuilt.set()
        abort(404)

    monkeypatch.setattr(page_cache, "_build", gone)
    store(allowance, "council", works=[work("new")])
    assert client.get("/places/opawa").status_code == 200  # as it was
    assert rebuilt.wait(10)
    allowance.config["SETTINGS"].page_stale_seconds = 0
    assert client.get("/places/opawa").status_code == 404


def lookups(body: str) -> dict[str, float]:
    return {
        s.labels["result"]: s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "tracker_page_cache_lookups_total"
    }


def test_under_gunicorn_each_worker_rebuilds_in_the_background(settings, loaded, tmp_path):
    """Two forked workers, an allowance of 6 s (so a rebuild waits at most 2 s after the
    last build): after another process's write, views are answered at once (some out of
    date) and the new page arrives within seconds."""
    env = {"TRACKER_MAP_TILES": "", "TRACKER_PAGE_STALE_SECONDS": "6"}
    with gunicorn(settings, tmp_path, **env) as served:

        def view(_=None) -> bytes:
            # A new connection each time, so both workers answer.
            headers = {"Connection": "close"}
            response = requests.get(served.base + "/", timeout=20, headers=headers)
            assert response.status_code == 200
            return response.content

        with ThreadPoolExecutor(4) as pool:
            kept = set(pool.map(view, range(40)))  # both workers keep the page
        assert len(kept) == 1
        store_app = type("App", (), {"extensions": {"engine": loaded[0]}})
        store(store_app, "council", works=[work("new")])
        started, seen_new = time.monotonic(), None
        while seen_new is None:
            with ThreadPoolExecutor(4) as pool:
                bodies = list(pool.map(view, range(8)))
            if all(body not in kept for body in bodies):
                seen_new = time.monotonic() - started
            assert time.monotonic() - started < 20, "the workers never rebuilt the page"
            time.sleep(0.1)
        counted = lookups(requests.get(served.base + "/metrics", timeout=10).text)
        assert counted.get("stale", 0) >= 1, counted  # served as it was meanwhile
        assert counted.get("fresh", 0) >= 30, counted
    assert "rebuilding the page" not in served.log.read_text()
