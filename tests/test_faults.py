"""Faults: processes killed mid-write, a full disk, a read-only database.

Every case ends the same way: no partial batch (each batch holds exactly the rows it
counted), every batch a client was told was stored (HTTP 201, or a feed run "ok") present
exactly once, and on SQLite `PRAGMA integrity_check` says ok. Subprocesses have timeouts
and are killed in `finally`; every loop has a deadline. A PostgreSQL server restarted
under load is tests/test_faults_pg.py. docs/operations.md ("Faults: what happens when…")
has the figures these tests measure (run with `-s` to see them).
"""

import html
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import requests
from bs4 import BeautifulSoup
from fixtures.feeds.server import Answer, FeedServer
from gunicorn_helpers import gunicorn, tracker_env
from page_helpers import store
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlmodel import Session

from tracker import create_app
from tracker.auth import issue_token
from tracker.db import make_engine
from tracker.feeds import run_lease_name
from tracker.leases import live_lease
from tracker.models import (
    AuditEvent,
    Batch,
    Challenge,
    Comment,
    Feed,
    FeedRun,
    OutboxMail,
    Report,
    ReportCategory,
    Subscription,
    every_revision,
)
from tracker.web.errors import FULL, READ_ONLY, database_failure

ROOT = Path(__file__).resolve().parent.parent
BASE_DAY = date(2012, 1, 1)
PLACES = ("opawa", "st-albans", "riccarton")


# --- what every case checks afterwards ---------------------------------------------------


def batch_sizes(engine) -> dict[int, tuple[int, int]]:
    """Each batch's id -> (rows it says it accepted, revisions stored under it)."""
    revisions = every_revision()
    with Session(engine) as session:
        counted = dict(session.execute(select(Batch.id, Batch.accepted)).all())
        stored = dict(
            session.execute(
                select(revisions.c.batch_id, func.count()).group_by(revisions.c.batch_id)
            ).all()
        )
    return {batch: (accepted, stored.get(batch, 0)) for batch, accepted in counted.items()}


def assert_whole(engine) -> None:
    """No partial batch, no stray revision, and (SQLite) an intact file."""
    sizes = batch_sizes(engine)
    partial = {batch: size for batch, size in sizes.items() if size[0] != size[1]}
    assert partial == {}, "batches whose stored rows differ from their count"
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def observations(first_day: int, count: int, value: float = 1) -> list[dict]:
    """`count` rows of homes-repaired on keys of their own, from BASE_DAY + first_day."""
    return [
        {
            "measure": "homes-repaired",
            "place": PLACES[n % len(PLACES)],
            "date": (BASE_DAY + timedelta(days=first_day + n // len(PLACES))).isoformat(),
            "value": value + n,
        }
        for n in range(count)
    ]


def token_for(engine, agency: str = "eqc") -> str:
    with Session(engine) as session:
        token = issue_token(session, agency, "faults")
        session.commit()
    return token


def post(client, token: str, rows: list[dict], key: str | None = None):
    headers = {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/observations", json={"observations": rows}, headers=headers)


# --- 4. a full disk and a read-only database ----------------------------------------------


def test_a_submission_that_does_not_fit_in_a_full_sqlite_database_is_507(
    app, client, loaded, database_url
):
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's max_page_count stands in for a full disk")
    engine = app.extensions["engine"]
    token = token_for(engine)
    assert post(client, token, observations(0, 30)).status_code == 201
    before = batch_sizes(engine)
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    def cap(dbapi_connection, _record):  # max_page_count holds per connection
        dbapi_connection.execute(f"PRAGMA max_page_count={pages + 2}")

    event.listen(engine, "connect", cap)
    engine.dispose()
    try:
        answer = post(client, token, observations(100, 3000))
        assert answer.status_code == 507, answer.get_data(as_text=True)
        assert answer.get_json() == {"error": FULL}
        assert "Retry-After" not in answer.headers
        page = client.get("/feeds")
        assert page.status_code == 200  # reads go on
        assert batch_sizes(engine) == before  # nothing of it stored, the rest intact
    finally:
        event.remove(engine, "connect", cap)
        engine.dispose()
    assert_whole(engine)
    assert post(client, token, observations(100, 3000)).status_code == 201  # room again
    assert_whole(engine)


def read_only_url(database_url: str) -> str:
    """The same database through a connection that cannot write."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        return f"sqlite:///file:{path}?mode=ro&uri=true"
    return database_url + "?options=-c%20default_transaction_read_only%3Don"


def test_a_read_only_database_refuses_writes_with_503_and_still_serves_reads(
    settings, loaded, database_url
):
    engine, _ = loaded
    token = token_for(engine)
    writable = create_app(settings)
    assert post(writable.test_client(), token, observations(0, 12)).status_code == 201
    writable.extensions["engine"].dispose()
    before = batch_sizes(engine)
    app = create_app(settings.model_copy(update={"database_url": read_only_url(database_url)}))
    app.config["TESTING"] = True
    client = app.test_client()
    try:
        answer = post(client, token, observations(50, 10))
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json() == {"error": READ_ONLY}
        assert int(answer.headers["Retry-After"]) > 0
        reads = client.get("/api/v1/places")
        assert reads.status_code == 200, reads.get_data(as_text=True)
        series = client.get("/api/v1/measures/homes-repaired/series")
        assert series.status_code == 200 and series.get_json()
        assert client.get("/feeds").status_code == 200
        assert batch_sizes(engine) == before
    finally:
        app.extensions["engine"].dispose()
    assert_whole(engine)


def test_resident_forms_on_a_read_only_database_say_so_and_store_nothing(
    settings, loaded, database_url
):
    """A resident who comments, follows a place, reports a problem or challenges a work
    while the database is read-only is told so on a page, and nothing is kept."""
    engine, _ = loaded
    writable = create_app(settings)
    store(writable, "council", works=[{
        "id": "w1", "title": "Footpath w1", "status": "complete",
        "actual_start": "2026-10-01", "actual_end": "2026-11-20",
        "geometry": {"type": "Point", "coordinates": [172.605, -43.535]},
    }])  # fmt: skip
    writable.extensions["engine"].dispose()
    with Session(engine) as session:
        session.add(ReportCategory(code="pothole", name="Pothole", agency_id="council"))
        session.commit()
    before = stored_by_residents(engine)
    app = create_app(settings.model_copy(update={"database_url": read_only_url(database_url)}))
    app.config["TESTING"] = True
    client = app.test_client()
    person = {"author_name": "Ana Tui", "name": "Ana Tui", "email": "ana@example.org"}
    forms = {
        "/places/opawa/comment": {"body": "The footpath is still shut."},
        "/places/opawa/follow": {},
        "/works/council/w1/challenge": {"note": "The kerb is still broken."},
        "/report?street=opawa-road": {"category_code": "pothole", "description": "A hole."},
    }
    try:
        for path, fields in forms.items():
            form = BeautifulSoup(client.get(path).get_data(as_text=True), "html.parser").find(
                "form", method="post"
            )
            assert form is not None, f"{path}: no form while the database is read-only"
            hidden = {i["name"]: i.get("value", "") for i in form.find_all("input", type="hidden")}
            answer = client.post(form.get("action") or path, data=hidden | person | fields)
            body = answer.get_data(as_text=True)
            assert answer.status_code == 503, (path, body[:500])
            assert answer.mimetype == "text/html"
            assert READ_ONLY in " ".join(html.unescape(body).split()), path
            assert int(answer.headers["Retry-After"]) > 0
    finally:
        app.extensions["engine"].dispose()
    assert stored_by_residents(engine) == before


def stored_by_residents(engine) -> dict[str, int]:
    with Session(engine) as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Comment, Subscription, Report, Challenge, OutboxMail, AuditEvent)
        }


# --- 1. a feed run killed mid-batch -------------------------------------------------------

FEED_ROWS = 1500  # rows the source serves each time, FEED_BAD of them refused
FEED_BAD = 30
KILLS = 10
# The run lease is RUN_LEASE_SECONDS (60 s) in production; these runs hold one of a
# second, so a killed run stops holding its feed back within a second, not a minute.
LEASE = 1.0
RUNNER = (
    "import sys, tracker.feeds.run as run; run.RUN_LEASE_SECONDS = float(sys.argv[1]); "
    "from tracker.cli import main; main(sys.argv[2:])"
)
FORK = multiprocessing.get_context("fork")


def _import_in_child(database_url: str, feed_id: str) -> None:
    """What `tracker import FEED` does, in a process forked from the test (no start-up
    time), on an engine of its own, its runs leasing for LEASE seconds."""
    from tracker.feeds import run as feed_run

    feed_run.RUN_LEASE_SECONDS = LEASE
    engine = make_engine(database_url)
    feed_run.run_feeds(engine, [feed_id])
    engine.dispose()


def import_process(settings, feed_id: str):
    process = FORK.Process(target=_import_in_child, args=(settings.database_url, feed_id))
    process.start()
    return process


def tracker_process(settings, *args: str, log: Path) -> subprocess.Popen:
    """`tracker ARGS` with runs leasing for LEASE seconds; its output goes to `log`."""
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(LEASE), *args],
            cwd=ROOT,
            env=tracker_env(settings),
            stdout=sink,
            stderr=sink,
        )


def end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def feed_source(server, arrivals: list[float]) -> None:
    """/big.csv: FEED_ROWS rows whose values change with every request (so each run stores
    every valid row as a new revision), FEED_BAD of them in an unknown place."""
    names = ("OPAWA", "St Albans", "riccarton")

    def answer(_query):
        arrivals.append(time.monotonic())
        served = len(arrivals)
        lines = ["suburb,as_at,completed"]
        for n in range(FEED_ROWS):
            place = "Nowhere" if n < FEED_BAD else names[n % 3]
            day = BASE_DAY + timedelta(days=n // 3)
            lines.append(f"{place},{day.isoformat()},{served * 10_000 + n}")
        return Answer(body=("\n".join(lines) + "\n").encode())

    server.pages("/big.csv", answer)


def feed_state(engine) -> tuple[dict[int, tuple[str, int, str | None]], dict[int, int]]:
    """Runs (id -> status, rows, error) and the batch of each run that stored one."""
    with Session(engine) as session:
        runs = {r.id: (r.status, r.rows, r.error) for r in session.scalars(select(FeedRun))}
        batches = dict(
            session.execute(
                select(Batch.feed_run_id, Batch.id).where(Batch.feed_run_id.is_not(None))
            ).all()
        )
    return runs, batches


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def lease_gone(engine) -> bool:
    with Session(engine) as session:
        return live_lease(session, run_lease_name("big")) is None


def test_a_feed_run_killed_anywhere_stores_all_its_rows_or_none_and_the_next_run_succeeds(
    settings, loaded, tmp_path
):
    engine, _ = loaded
    server = FeedServer()
    arrivals: list[float] = []
    feed_source(server, arrivals)
    with Session(engine) as session:
        session.add(
            Feed(id="big", agency_id="eqc", url=server.url("/big.csv"), format="csv",
                 every="6h", timeout=20, measure_id="homes-repaired",
                 fields={"place": "suburb", "date": "as_at", "value": "completed"},
                 place_match="name")
        )  # fmt: skip
        session.commit()
    valid = FEED_ROWS - FEED_BAD
    log = tmp_path / "import.log"
    outcomes: Counter = Counter()
    try:
        # One whole run first: how long a run takes from the source's answer to its commit.
        process = import_process(settings, "big")
        try:
            assert wait_until(lambda: arrivals, 30)
            assert wait_until(lambda: feed_state(engine)[1], 60)
            whole = time.monotonic() - arrivals[-1]
        finally:
            process.join(30)
        rng = random.Random(13)
        for kill in range(KILLS):
            asked = len(arrivals) + 1
            process = import_process(settings, "big")
            try:
                assert wait_until(lambda n=asked: len(arrivals) == n, 30)
                # Anywhere from reading the answer to committing, and just after.
                time.sleep(2 * whole * (kill + rng.random()) / KILLS)
                os.kill(process.pid, signal.SIGKILL)
                process.join(10)
            finally:
                if process.is_alive():
                    process.kill()
                process.join(10)
            runs, batches = feed_state(engine)
            last = max(runs)
            outcomes[runs[last][0]] += 1
            assert_whole(engine)
            assert all(runs[run][0] == "ok" for run in batches)  # a batch only with its "ok"
            assert all(runs[run][1] == valid for run in batches)
            if last in batches:
                assert batch_sizes(engine)[batches[last]] == (valid, valid)
            assert wait_until(lambda: lease_gone(engine), LEASE + 5)
        # The next run goes ahead: the killed runs are closed, not "under way".
        process = tracker_process(settings, "import", "big", log=log)
        try:
            assert process.wait(60) == 0, log.read_text()[-2000:]
        finally:
            end(process)
    finally:
        server.close()
    runs, batches = feed_state(engine)
    final = runs[max(runs)]
    assert final[:2] == ("ok", valid)
    assert [r for r in runs.values() if r[0] == "running"] == []
    killed = [r for r in runs.values() if r[0] == "failed"]
    assert all(r[2] == "interrupted: its process stopped" for r in killed)
    assert len(killed) == outcomes["running"]
    assert len(batches) == len(runs) - len(killed) == outcomes["ok"] + 2
    assert_whole(engine)
    print(f"\nfeed kills ({engine.dialect.name}): a run takes {whole:.2f} s after the answer; "
          f"{outcomes['running']} killed mid-run (nothing stored), {outcomes['ok']} after "
          f"the commit (all {valid} rows)")  # fmt: skip


# --- 5. a scheduler killed mid-run ---------------------------------------------------------

# A scheduler whose feed schedules run sixty times faster (a feed "every 1m" is due every
# second), its runs leasing for LEASE seconds: what takes minutes in production takes
# seconds here, through the same code.
QUICK_SCHEDULER = (
    "import sys, tracker.feeds.run as run, tracker.feeds.schedule as schedule, "
    "tracker.scheduler as scheduler; run.RUN_LEASE_SECONDS = float(sys.argv[1]); "
    "real = schedule.every_interval; "
    "schedule.every_interval = scheduler.every_interval = lambda every: real(every) / 60; "
    "from tracker.cli import main; main(sys.argv[2:])"
)
SMALL_CSV = b"suburb,as_at,completed\nOPAWA,2014-03-31,10\nSt Albans,2014-03-31,20\n"


def scheduler_process(settings, log: Path) -> subprocess.Popen:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", QUICK_SCHEDULER, str(LEASE), "scheduler",
             "--lease-seconds", "2"],
            cwd=ROOT, env=tracker_env(settings), stdout=sink, stderr=sink,
        )  # fmt: skip


def test_a_scheduler_killed_mid_run_leaves_a_run_the_next_scheduler_closes_and_runs_again(
    settings, loaded, tmp_path
):
    engine, _ = loaded
    server = FeedServer()
    # The first answer trickles (a slow source, about 7 s); later ones are quick.
    server.add("/slow.csv", Answer(body=SMALL_CSV, trickle=0.1), Answer(body=SMALL_CSV))
    with Session(engine) as session:
        session.add(
            Feed(id="slow", agency_id="eqc", url=server.url("/slow.csv"), format="csv",
                 every="1m", timeout=20, measure_id="homes-repaired",
                 fields={"place": "suburb", "date": "as_at", "value": "completed"},
                 place_match="name")
        )  # fmt: skip
        session.commit()
    log = tmp_path / "scheduler.log"
    first = second = None
    try:
        first = scheduler_process(settings, log)
        assert wait_until(lambda: server.count("/slow.csv") == 1, 30), log.read_text()[-2000:]
        time.sleep(0.5)  # the run is reading its slow source
        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(10)
        runs, _ = feed_state(engine)
        assert [status for status, _, _ in runs.values()] == ["running"]
        killed = max(runs)
        second = scheduler_process(settings, log)
        assert wait_until(lambda: "ok" in {r[0] for r in feed_state(engine)[0].values()}, 30), (
            log.read_text()[-2000:]
        )
        recovered = time.monotonic() - killed_at
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, log.read_text()[-2000:]
    finally:
        for process in (first, second):
            if process is not None:
                end(process)
        server.close()
    runs, batches = feed_state(engine)
    assert runs[killed] == ("failed", 0, "interrupted: its process stopped")
    ok = [run for run, state in runs.items() if state[0] == "ok"]
    assert ok and all(runs[run][1] == 2 for run in ok) and set(batches) == set(ok)
    refused = [r for r in runs.values() if r[2] and r[2].startswith("another run")]
    assert [r for r in runs.values() if r[0] == "running"] == []
    assert_whole(engine)
    print(f"\nscheduler kill ({engine.dialect.name}): the next scheduler's run succeeded "
          f"{recovered:.1f} s after the kill ({len(refused)} slot(s) refused while the "
          f"dead run's lease lasted)")  # fmt: skip


# --- 2. a web worker killed mid-batch ------------------------------------------------------

WORKER_KILLS = 10
POSTERS = 3
BATCH_ROWS = 300  # 100 days of three places
SLOTS = 18  # a poster's batches of 100 days before it revises its old keys again


def test_web_workers_killed_mid_batch_lose_no_acknowledged_batch_and_store_none_in_part(
    settings, loaded, tmp_path
):
    engine, _ = loaded
    token = token_for(engine)
    env = {
        "TRACKER_SECURE_COOKIES": "false",
        "TRACKER_GUNICORN_THREADS": "2",
        "TRACKER_GUNICORN_GRACEFUL_TIMEOUT": "3",
    }
    with gunicorn(settings, tmp_path, **env) as served:
        acknowledged, failures, replaced = _kill_workers_under_posters(served, token)
    with Session(engine) as session:
        keys = Counter(k for k in session.scalars(select(Batch.idempotency_key)) if k)
    assert acknowledged and all(keys[key] == 1 for key in acknowledged)
    assert len(set(acknowledged.values())) == len(acknowledged)
    assert max(keys.values()) == 1
    assert_whole(engine)
    assert not [code for code in failures if isinstance(code, int) and code != 503], failures
    print(f"\nworker kills ({engine.dialect.name}): {len(acknowledged)} batches acknowledged, "
          f"{sum(failures.values())} failed requests retried ({dict(failures)}), workers "
          f"replaced in {min(replaced):.2f}-{max(replaced):.2f} s")  # fmt: skip


def _kill_workers_under_posters(served, token: str) -> tuple[dict, Counter, list[float]]:
    """POSTERS post batches (each retried under its key until answered 201) while a worker
    is killed WORKER_KILLS times: the batch ids acknowledged by key, the failed requests
    by status or error, and how long each worker took to be replaced."""
    base = served.base
    acknowledged: dict[str, int] = {}
    failures = Counter()
    stop = threading.Event()
    replaced: list[float] = []

    def poster(number: int) -> None:
        batch = -1
        while not stop.is_set():
            batch += 1
            key = f"p{number}-{batch}"
            rows = observations((batch % SLOTS * POSTERS + number) * 100, BATCH_ROWS, batch * 1000)
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:  # the same key
                try:
                    answer = requests.post(
                        base + "/api/v1/observations",
                        json={"observations": rows},
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                        timeout=(3, 20),
                    )
                except requests.RequestException as exc:
                    failures[type(exc).__name__] += 1
                    time.sleep(0.1)
                    continue
                if answer.status_code == 201:
                    acknowledged[key] = answer.json()["batch"]
                    break
                failures[answer.status_code] += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=poster, args=(n,), daemon=True) for n in range(POSTERS)]
    try:
        for thread in threads:
            thread.start()
        rng = random.Random(7)
        deadline = time.monotonic() + 60
        for _ in range(WORKER_KILLS):
            time.sleep(rng.uniform(0.2, 0.6))  # batches are being written
            victims = served.workers()
            os.kill(rng.choice(victims), signal.SIGKILL)
            killed = time.monotonic()
            assert wait_until(
                lambda v=set(victims): (
                    len(set(served.workers()) - v) == 1 and len(served.workers()) == 2
                ),
                15,
            ), served.log.read_text()[-3000:]
            replaced.append(time.monotonic() - killed)
            assert time.monotonic() < deadline
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(40)
    assert not any(thread.is_alive() for thread in threads)
    return acknowledged, failures, replaced


# --- the handler's verdicts ------------------------------------------------------------------


def _wrapped(kind, orig: Exception, invalidated: bool = False):
    return kind("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error, status",
    [
        (_wrapped(OperationalError, sqlite3.OperationalError("database is locked")), 503),
        (_wrapped(OperationalError, sqlite3.OperationalError("database or disk is full")), 507),
        (
            _wrapped(
                OperationalError, sqlite3.OperationalError("attempt to write a readonly database")
            ),
            503,
        ),
        (_wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating connection")), 503),
        (_wrapped(OperationalError, psycopg.errors.CannotConnectNow("starting up")), 503),
        (_wrapped(OperationalError, psycopg.OperationalError("connection refused")), 503),
        (_wrapped(OperationalError, psycopg.errors.DiskFull("could not extend file")), 507),
        (_wrapped(InternalError, psycopg.errors.ReadOnlySqlTransaction("read-only")), 503),
        (_wrapped(DBAPIError, Exception("anything"), invalidated=True), 503),
        (DisconnectionError("gone"), 503),
        # Everything else is a bug or a bad query: a 500, in the log with its traceback.
        (_wrapped(OperationalError, sqlite3.OperationalError("no such table: x")), None),
        (_wrapped(ProgrammingError, psycopg.errors.UndefinedTable("no such table")), None),
        (_wrapped(IntegrityError, psycopg.errors.UniqueViolation("duplicate key")), None),
        (_wrapped(InternalError, psycopg.errors.InFailedSqlTransaction("aborted")), None),
    ],
)
def test_database_failures_a_client_can_wait_out_or_report_are_told_apart(error, status):
    verdict = database_failure(error)
    assert (verdict[0] if verdict else None) == status
