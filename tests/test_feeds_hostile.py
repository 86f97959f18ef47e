"""Feed runs against sources that trickle, redirect, leak or outlive their process, and
against validators too long to keep: real HTTP servers on 127.0.0.1, on both backends."""

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from fixtures.feeds.server import Answer
from sqlalchemy import select
from sqlmodel import Session
from test_feeds import (  # noqa: F401 (the fixtures are used by name)
    CSV,
    add_feed,
    configured_tree_folder,
    feed_row,
    feed_server,
    left_running,
    loaded_engine,
    quick_backoff,
    stored,
)
from test_scheduler import wait_for

from tracker import feeds
from tracker.feeds import fetch, run_feed
from tracker.models import FeedRun, SchedulerLease


def runs(engine) -> list[tuple[str, str | None]]:
    """(status, error) of every run, in order."""
    with Session(engine) as session:
        return session.execute(select(FeedRun.status, FeedRun.error).order_by(FeedRun.id)).all()


def leases(engine) -> list[SchedulerLease]:
    with Session(engine) as session:
        return session.scalars(select(SchedulerLease)).all()


# --- the timeout bounds the whole answer ------------------------------------------------


@pytest.mark.parametrize("slow_headers", [False, True], ids=["body", "headers"])
def test_a_trickling_server_fails_the_run_within_its_timeout(engine, server, slow_headers):
    # Each byte comes well inside the timeout, so only a bound on the whole answer helps.
    server.add("/slow.csv", Answer(body=CSV, trickle=0.3, slow_headers=slow_headers))
    started = time.monotonic()
    run = run_feed(engine, add_feed(engine, server.url("/slow.csv"), timeout=1.5))
    took = time.monotonic() - started
    assert run.status == "failed" and "within 1.5 s" in run.error, run.error
    assert took < 1.5 + 1
    assert server.count("/slow.csv") == 1  # a slow answer is not asked for again


def test_retries_of_a_trickling_source_stop_at_the_run_s_time_limit(engine, server, monkeypatch):
    monkeypatch.setattr(fetch, "MAX_RUN_SECONDS", 1.5)
    # Two bytes in 0.6 s, then the connection breaks: worth another try, inside the timeout.
    server.add("/slow.csv", Answer(body=CSV[:2], trickle=0.3, truncate=True))
    started = time.monotonic()
    run = run_feed(engine, add_feed(engine, server.url("/slow.csv"), timeout=1.4))
    took = time.monotonic() - started
    assert run.status == "failed" and "took over 1.5 s" in run.error, run.error
    assert took < 1.5 + 0.5
    assert server.count("/slow.csv") > 1


# --- redirects --------------------------------------------------------------------------


def test_a_redirect_within_the_feed_s_own_private_network_is_followed(engine, server):
    server.add("/old.csv", Answer(301, headers={"Location": server.url("/moved.csv")}))
    server.add("/moved.csv", Answer(302, headers={"Location": "/repairs.csv"}))  # relative
    server.add("/repairs.csv", Answer(body=CSV))
    run = run_feed(engine, add_feed(engine, server.url("/old.csv")))
    assert (run.status, run.rows) == ("ok", 3)
    assert [path for path, _, _ in server.requests] == ["/old.csv", "/moved.csv", "/repairs.csv"]


@pytest.mark.parametrize(
    "location", ["file:///etc/passwd", "ftp://127.0.0.1/repairs.csv", "gopher://127.0.0.1:70/"]
)
def test_a_redirect_to_another_scheme_is_not_followed(engine, server, location):
    server.add("/repairs.csv", Answer(302, headers={"Location": location}))
    run = run_feed(engine, add_feed(engine, server.url("/repairs.csv")))
    assert run.status == "failed"
    assert run.error == f"{server.url('/repairs.csv')} redirected to a non-http URL; not followed"


def test_a_redirect_loop_stops_after_a_few_redirects(engine, server):
    server.add("/loop.csv", Answer(302, headers={"Location": "/loop.csv"}))
    run = run_feed(engine, add_feed(engine, server.url("/loop.csv")))
    assert run.status == "failed"
    assert "too many redirects" in run.error and f"over {fetch.MAX_REDIRECTS}" in run.error
    assert server.count("/loop.csv") == fetch.MAX_REDIRECTS + 1


def test_a_public_host_cannot_redirect_a_run_to_a_private_address(engine, server, monkeypatch):
    # The server is on 127.0.0.1; the run is told "localhost" is a public address.
    monkeypatch.setattr(fetch, "host_addresses", lambda host: ["151.101.1.1"])
    server.add("/repairs.csv", Answer(302, headers={"Location": server.url("/inside.csv")}))
    server.add("/inside.csv", Answer(body=CSV))
    public = server.url("/repairs.csv").replace("127.0.0.1", "localhost")
    run = run_feed(engine, add_feed(engine, public))
    assert run.status == "failed"
    assert run.error == f"{public} redirected to a private address; not followed"
    assert server.count("/inside.csv") == 0


NAMES = {
    "data.example.govt.nz": ["151.101.1.1"],
    "cdn.example.com": ["151.101.2.2", "2a04:4e42::1"],
    "intranet.example": ["10.1.2.3"],
    "localhost": ["127.0.0.1", "::1"],
    "half-private.example": ["151.101.3.3", "192.168.1.9"],
}
PUBLIC = "https://data.example.govt.nz/repairs.csv"


@pytest.mark.parametrize(
    ("from_url", "to_url", "allowed"),
    [
        (PUBLIC, "https://cdn.example.com/repairs.csv", True),
        (PUBLIC, "http://127.0.0.1:8080/", False),
        (PUBLIC, "http://localhost/", False),
        (PUBLIC, "http://10.0.0.7/", False),
        (PUBLIC, "http://172.16.0.1/", False),
        (PUBLIC, "http://192.168.1.1/", False),
        (PUBLIC, "http://169.254.169.254/latest/meta-data/", False),  # cloud metadata
        (PUBLIC, "http://100.64.0.1/", False),  # carrier-grade NAT
        (PUBLIC, "http://0.0.0.0/", False),
        (PUBLIC, "http://[::1]/", False),
        (PUBLIC, "http://[fe80::1]/", False),
        (PUBLIC, "http://[fd00::1]/", False),
        (PUBLIC, "http://[::ffff:127.0.0.1]/", False),
        (PUBLIC, "http://224.0.0.1/", False),
        (PUBLIC, "http://intranet.example/", False),
        (PUBLIC, "http://half-private.example/", False),  # one private address is enough
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:9000/b", True),
        ("http://10.0.0.5/a", "http://192.168.0.9/b", True),
        ("http://localhost/a", "http://intranet.example/b", True),
        ("http://127.0.0.1/a", PUBLIC, True),
    ],
)
def test_a_redirect_goes_from_a_public_host_to_public_hosts_only(from_url, to_url, allowed):
    assert feeds.redirect_allowed(from_url, to_url, resolve=lambda h: NAMES.get(h, [])) is allowed


# --- public errors carry nothing of the source's ------------------------------------------

SECRET = "s3cr3t-d0e5-n0t-leak"


@pytest.mark.parametrize(
    ("answer", "fmt", "says"),
    [
        (Answer(body=f"{SECRET}\n".encode()), "csv", "missing column(s) 'suburb' (for place)"),
        (Answer(body=json.dumps([{SECRET: 1}]).encode()), "json", "'as_at' (for date)"),
        (Answer(404, reason=SECRET), "csv", "HTTP 404 Not Found from"),
        (Answer(503, reason=SECRET), "csv", "HTTP 503 Service Unavailable from"),
        (Answer(body=f"{SECRET},{SECRET}\n".encode()), "csv", "names one column twice"),
        (
            Answer(body=json.dumps({"success": False, "error": {"message": SECRET}}).encode()),
            "ckan",
            "CKAN refused the request",
        ),
        (
            Answer(body=json.dumps({"error": {"code": 498, "message": SECRET}}).encode()),
            "arcgis",
            "ArcGIS error 498",
        ),
        (
            Answer(body=json.dumps({"error": {"code": SECRET, "details": [SECRET]}}).encode()),
            "arcgis",
            "ArcGIS error (its message",
        ),
    ],
    ids=[
        "csv-header",
        "json-keys",
        "reason-4xx",
        "reason-5xx",
        "repeated-header",
        "ckan-error",
        "arcgis-error",
        "arcgis-code",
    ],
)
def test_a_failed_run_s_public_error_carries_nothing_the_source_sent(
    engine, server, answer, fmt, says
):
    server.add("/feed", answer)
    server.add("/feed/query", answer)  # where an ArcGIS layer is asked
    run = run_feed(engine, add_feed(engine, server.url("/feed"), format=fmt))
    assert run.status == "failed" and says in run.error, run.error
    assert SECRET not in run.error


def test_a_local_file_that_is_not_data_is_not_shown_in_the_error(client, engine, tree_folder):
    secret = tree_folder / "instance" / "secret_key"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    run = run_feed(engine, add_feed(engine, f"file:{secret}"))
    assert run.status == "failed" and "the source has 1 column" in run.error
    for page in ("/api/v1/feeds", "/feeds"):
        shown = client.get(page).get_data(as_text=True)
        assert "the source has 1 column" in shown and SECRET not in shown


# --- file: feeds stay inside the tree's folder ------------------------------------------


@pytest.mark.parametrize("way", ["absolute", "dot-dot", "symlink"])
def test_a_file_feed_outside_the_tree_s_folder_is_not_read(engine, tree_folder, way):
    outside = tree_folder.parent / f"{tree_folder.name}-elsewhere"
    outside.mkdir()
    (outside / "repairs.csv").write_bytes(CSV)
    (tree_folder / "link.csv").symlink_to(outside / "repairs.csv")
    path = {
        "absolute": outside / "repairs.csv",
        "dot-dot": tree_folder / ".." / outside.name / "repairs.csv",
        "symlink": tree_folder / "link.csv",
    }[way]
    run = run_feed(engine, add_feed(engine, f"file:{path}"))
    assert run.status == "failed"
    assert run.error == f"{path.name} is outside the tree's folder; not read"
    assert stored(engine)["Batch"] == 0


# --- runs whose process died ------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "held_for"),
    [(None, 0), (timedelta(seconds=-1), 0), (timedelta(seconds=30), 100)],
    ids=["no lease", "expired", "another run's"],
)
def test_a_run_whose_process_stopped_is_closed_and_the_feed_runs_at_once(
    engine, server, lease, held_for
):
    server.add("/repairs.csv", Answer(body=CSV))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    left_running(engine, feed_id, timedelta(minutes=2), lease, held_for)
    run = run_feed(engine, feed_id)
    assert (run.status, run.rows) == ("ok", 3)
    assert runs(engine) == [("failed", "interrupted: its process stopped"), ("ok", None)]
    assert leases(engine) == []  # the finished run gave its lease up


def test_a_run_holds_a_lease_that_fits_however_long_the_feed_s_id():
    names = {feeds.run_lease_name(c * 100) for c in "ab"} | {feeds.run_lease_name("eqc")}
    assert len(names) == 3
    assert all(len(name) <= 50 for name in names)
    assert feeds.run_lease_name("eqc") == "feedrun:eqc"


KILLED_RUN = """
import sys
from tracker.db import make_engine
from tracker.feeds import run
run.RUN_LEASE_SECONDS = float(sys.argv[3])
run.run_feed(make_engine(sys.argv[1]), sys.argv[2])
"""


def test_a_run_killed_mid_fetch_does_not_hold_the_feed_back(engine, database_url, server):
    lease_seconds = 1.0
    server.add("/repairs.csv", Answer(body=CSV, trickle=0.5), Answer(body=CSV))
    feed_id = add_feed(engine, server.url("/repairs.csv"), id="f" * 100, timeout=60)
    command = [sys.executable, "-c", KILLED_RUN, database_url, feed_id, str(lease_seconds)]
    child = subprocess.Popen(command)
    try:
        assert wait_for(lambda: server.count("/repairs.csv") == 1 and leases(engine), 15)
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        killed = time.monotonic()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
    assert runs(engine) == [("running", None)]
    time.sleep(lease_seconds)  # the lease it can no longer renew runs out
    run = run_feed(engine, feed_id)
    assert time.monotonic() - killed < lease_seconds + 1
    assert (run.status, run.rows) == ("ok", 3)
    assert runs(engine) == [("failed", "interrupted: its process stopped"), ("ok", None)]


# --- validators too long to keep --------------------------------------------------------


@pytest.mark.parametrize("header", ["ETag", "Last-Modified"])
def test_a_validator_longer_than_it_can_be_kept_is_dropped(engine, server, header, caplog):
    value = f'"{"v" * 598}"'
    server.add("/repairs.csv", Answer(body=CSV, headers={header: value}))
    feed_id = add_feed(engine, server.url("/repairs.csv"))
    assert [run_feed(engine, feed_id).status for _ in range(2)] == ["ok", "ok"]
    feed = feed_row(engine)
    assert (feed.etag, feed.last_modified) == (None, None)
    assert not any(
        name in server.requests[-1][2] for name in ("If-None-Match", "If-Modified-Since")
    )
    assert f"{header} of 600 characters" in caplog.text
