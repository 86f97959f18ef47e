"""The scheduler: one lease holder at a time, jobs run once, tree changes followed."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tracker.db import make_engine
from tracker.leases import release_lease, take_lease
from tracker.models import Feed, FeedRun, SchedulerLease
from tracker.scheduler import LEASE_NAME, FeedScheduler, Timing, lease_holder

CSV = b"place,date,value\nopawa,2014-03-31,10\nriccarton,2014-03-31,30\n"
QUICK = Timing(lease=1.5, sync=0.3, max_jitter=0)


@pytest.fixture
def engine(loaded):
    return loaded[0]


@pytest.fixture(autouse=True)
def tree_folder(tmp_path, monkeypatch):
    """tmp_path, where add_feeds writes, as the configured tree's folder: `file:` feeds are
    read only from inside it."""
    monkeypatch.setenv("TRACKER_TREE", str(tmp_path / "results_tree.yaml"))


def add_feeds(engine, tmp_path: Path, *ids: str, every: str = "1h") -> None:
    """Local CSV feeds of the eqc measure, as `tracker init` stores them."""
    path = tmp_path / "repairs.csv"
    path.write_bytes(CSV)
    with Session(engine) as session:
        for feed_id in ids:
            session.add(
                Feed(
                    id=feed_id,
                    agency_id="eqc",
                    url=f"file:{path}",
                    format="csv",
                    every=every,
                    measure_id="homes-repaired",
                )
            )
        session.commit()


def run_counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.execute(select(FeedRun.feed_id, func.count()).group_by(FeedRun.feed_id))
        return dict(rows.all())


def holder(engine) -> str | None:
    with Session(engine) as session:
        lease = lease_holder(session)
        return lease.holder if lease else None


def wait_for(condition, seconds: float = 8) -> bool:
    """Poll until `condition()` is true; False if it never was within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def start(engine, name: str, timing: Timing = QUICK) -> tuple[FeedScheduler, threading.Thread]:
    scheduler = FeedScheduler(engine, holder=name, timing=timing)
    thread = threading.Thread(target=scheduler.run, name=name, daemon=True)
    thread.start()
    return scheduler, thread


def stop(scheduler: FeedScheduler, thread: threading.Thread) -> None:
    scheduler.stop()
    thread.join(10)
    assert not thread.is_alive(), "the scheduler did not stop"


def test_the_lease_has_one_holder_until_it_expires_or_is_released(engine):
    now = datetime.now(UTC)
    assert take_lease(engine, LEASE_NAME, "a", 60, now=now)
    assert not take_lease(engine, LEASE_NAME, "b", 60, now=now)
    assert take_lease(engine, LEASE_NAME, "a", 60, now=now + timedelta(seconds=30))  # a renewal
    assert not take_lease(engine, LEASE_NAME, "b", 60, now=now + timedelta(seconds=89))
    assert take_lease(engine, LEASE_NAME, "b", 60, now=now + timedelta(seconds=91))  # a's lapsed
    assert not take_lease(engine, LEASE_NAME, "a", 60, now=now + timedelta(seconds=92))
    release_lease(engine, LEASE_NAME, "a")  # not a's to give up
    assert not take_lease(engine, LEASE_NAME, "a", 60, now=now + timedelta(seconds=93))
    release_lease(engine, LEASE_NAME, "b")
    assert take_lease(engine, LEASE_NAME, "a", 60, now=now + timedelta(seconds=94))


def test_two_schedulers_at_once_run_each_job_once(loaded, database_url, tmp_path):
    engine = loaded[0]
    add_feeds(engine, tmp_path, "feed-a", "feed-b")
    engines = [make_engine(database_url) for _ in range(2)]
    first = start(engines[0], "first")
    second = start(engines[1], "second")
    try:
        assert wait_for(lambda: run_counts(engine) == {"feed-a": 1, "feed-b": 1})
        time.sleep(1)  # time for a wrongly doubled run to show
        assert run_counts(engine) == {"feed-a": 1, "feed-b": 1}
        winner, loser = (first, second) if holder(engine) == "first" else (second, first)
        stop(*winner)
        # The other takes over; the feeds are not due again, so nothing runs twice.
        assert wait_for(lambda: holder(engine) == loser[0].holder)
        time.sleep(0.5)
        assert run_counts(engine) == {"feed-a": 1, "feed-b": 1}
    finally:
        for scheduler in (first, second):
            stop(*scheduler)
        for each in engines:
            each.dispose()
    assert holder(engine) is None  # released on the way out


def test_tree_changes_are_followed_without_a_restart(engine, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tracker.scheduler")
    add_feeds(engine, tmp_path, "feed-a")
    scheduler = start(engine, "only")
    try:
        assert wait_for(lambda: run_counts(engine) == {"feed-a": 1})
        add_feeds(engine, tmp_path, "feed-new")
        assert wait_for(lambda: run_counts(engine).get("feed-new") == 1)
        with Session(engine) as session:
            session.get(Feed, "feed-a").retired_at = datetime.now(UTC)
            session.commit()
        assert wait_for(lambda: "feed feed-a left the tree: unscheduled" in caplog.text)
    finally:
        stop(*scheduler)


def test_web_workers_never_run_feeds(app, client, engine, tmp_path):
    add_feeds(engine, tmp_path, "feed-a")
    assert client.get("/api/v1/feeds").status_code == 200
    time.sleep(0.2)
    assert run_counts(engine) == {}
    assert holder(engine) is None


def test_a_scheduler_process_stops_cleanly_and_a_waiting_one_takes_over_from_a_dead_one(
    settings, engine, tmp_path
):
    add_feeds(engine, tmp_path, "feed-a")
    env = os.environ | {
        "TRACKER_DATABASE_URL": settings.database_url,
        "TRACKER_TREE": str(tmp_path / "results_tree.yaml"),
        "TRACKER_INSTANCE_PATH": str(settings.instance_path),
        "TRACKER_SECRET_KEY": "test-secret",
    }
    tracker = str(Path(sys.executable).parent / "tracker")
    command = [tracker, "scheduler", "--lease-seconds", "2"]
    # Logs go to files: a pipe nobody reads until the end can fill and block the process.
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    files = [logs["first"].open("w"), logs["second"].open("w")]
    first = subprocess.Popen(command, env=env, stderr=files[0])
    second = None
    try:
        assert wait_for(lambda: f":{first.pid}:" in (holder(engine) or ""), 15)
        assert wait_for(lambda: run_counts(engine) == {"feed-a": 1})
        second = subprocess.Popen(command, env=env, stderr=files[1])
        first.kill()  # dies without giving the lease up
        first.wait(5)
        assert wait_for(lambda: f":{second.pid}:" in (holder(engine) or ""), 15)
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0, logs["second"].read_text()[-3000:]
        assert "stopped" in logs["second"].read_text()
        assert holder(engine) is None
        assert run_counts(engine) == {"feed-a": 1}
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(5)
        for file in files:
            file.close()


def test_the_lease_row_is_a_single_row_named_scheduler(engine):
    assert take_lease(engine, LEASE_NAME, "a", 60)
    with Session(engine) as session:
        rows = session.scalars(select(SchedulerLease)).all()
    assert [(row.name, row.holder) for row in rows] == [("scheduler", "a")]


def test_the_feeds_page_says_a_scheduler_runs_without_naming_its_host(engine, client):
    assert "No scheduler is running" in client.get("/feeds").get_data(as_text=True)
    assert take_lease(engine, LEASE_NAME, "ops-host-7.internal:4242:ab12", 60)
    page = client.get("/feeds").get_data(as_text=True)
    assert "The scheduler is running." in page
    assert "ops-host-7" not in page and "4242" not in page
