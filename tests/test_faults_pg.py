"""A private PostgreSQL server stopped and started again while the site is under load.

The app is served by a threaded werkzeug server in this process (one "worker" that is
never restarted) on a cluster of its own (tests/pg_cluster.py). Clients keep asking for
pages, API reads and writes; the cluster stops for a few seconds and starts again. While
it is down every answer is a clean 503 with Retry-After (JSON under /api, a page
elsewhere), never a 500 or a hang, and /readyz says 503; once it is back every request
succeeds again, and every batch that got a 201 is stored exactly once and whole.
"""

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import TINY_TREE
from pg_cluster import Cluster, available, private_root
from sqlalchemy import func, select
from sqlmodel import Session
from test_faults import assert_whole, batch_sizes, observations, post, token_for
from werkzeug.serving import WSGIRequestHandler, make_server

from tracker import create_app
from tracker.cli import initialise
from tracker.models import Batch
from tracker.settings import Settings
from tracker.web.errors import FULL

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL server programs missing")

DOWN_SECONDS = 3  # how long the server stays stopped
TIMEOUT = (3, 10)  # connect, read: a hang fails the test instead of stalling it
RUN_SECONDS = 40  # the whole load, at most
DAY_SLOTS = 60  # a writer's batches of 40 days: their dates stay in the past


@dataclass
class Answer:
    at: float  # seconds since the load began
    kind: str  # page, read, write, ready
    status: int  # 0: no answer within TIMEOUT
    retry_after: str | None
    content_type: str
    seconds: float


class Quiet(WSGIRequestHandler):
    def log_request(self, *args) -> None:  # the app logs its own access lines
        pass


@pytest.fixture
def cluster():
    with private_root() as root:
        server = Cluster(root, "primary").init()
        server.start()
        yield server


def tiny_city_settings(cluster: Cluster, tmp_path: Path) -> Settings:
    """Settings for the tiny city in a new database on the private cluster."""
    return Settings(
        database_url=cluster.create_database("tracker"),
        tree=TINY_TREE,
        instance_path=tmp_path / "instance",
        secret_key="test-secret",
        map_tiles="",
        _env_file=None,
    )


@pytest.fixture
def site(cluster, tmp_path):
    """The tiny city on the private cluster, served on a free port; (base URL, engine)."""
    settings = tiny_city_settings(cluster, tmp_path)
    engine, _ = initialise(settings)
    app = create_app(settings)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", engine
    finally:
        server.shutdown()
        thread.join(10)
        app.extensions["engine"].dispose()
        engine.dispose()


def test_a_restart_of_the_database_gives_clean_503s_and_the_site_recovers_by_itself(cluster, site):
    base, engine = site
    token = token_for(engine)
    answers: list[Answer] = []
    acknowledged: dict[str, int] = {}  # Idempotency-Key -> the batch its 201 named
    stop = threading.Event()
    began = time.monotonic()

    def ask(kind: str, method: str, path: str, **options) -> requests.Response | None:
        started = time.monotonic()
        try:
            response = requests.request(method, base + path, timeout=TIMEOUT, **options)
        except requests.RequestException:
            response = None
        answers.append(
            Answer(
                started - began,
                kind,
                response.status_code if response is not None else 0,
                response.headers.get("Retry-After") if response is not None else None,
                response.headers.get("Content-Type", "") if response is not None else "",
                time.monotonic() - started,
            )
        )
        return response

    def reader() -> None:
        while not stop.is_set():
            ask("page", "GET", "/feeds")
            ask("read", "GET", "/api/v1/measures/homes-repaired/series")
            ask("ready", "GET", "/readyz")
            ask("health", "GET", "/healthz")
            time.sleep(0.05)

    def writer(number: int) -> None:
        batch = -1
        while not stop.is_set():
            batch += 1
            key = f"w{number}-{batch}-{uuid.uuid4().hex[:6]}"
            # 40 days of keys of its own; after DAY_SLOTS batches, new values of old keys
            rows = observations((batch % DAY_SLOTS * 2 + number) * 40, 120, value=batch)
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:  # retried, same key
                response = ask(
                    "write",
                    "POST",
                    "/api/v1/observations",
                    json={"observations": rows},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                )
                if response is not None and response.status_code == 201:
                    acknowledged[key] = response.json()["batch"]
                    break
                time.sleep(0.2)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    threads += [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        stopping = time.monotonic() - began
        cluster.stop("fast")  # terminates the sessions under way, as a restart does
        stopped = time.monotonic() - began
        time.sleep(DOWN_SECONDS)
        starting = time.monotonic() - began
        cluster.start()
        started = time.monotonic() - began
        time.sleep(4)
        assert time.monotonic() - began < RUN_SECONDS
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a client hung"

    assert [a for a in answers if a.status == 0] == [], "requests without an answer in time"
    assert [a for a in answers if a.status >= 500 and a.status != 503] == []
    refused = [a for a in answers if a.status == 503]
    assert refused, "the stop was not noticed"
    for answer in refused:
        assert answer.retry_after and int(answer.retry_after) > 0
        json_answer = answer.kind in ("read", "write", "ready")
        assert ("application/json" in answer.content_type) == json_answer, answer
    assert {a.status for a in answers if a.kind == "health"} == {200}  # no worker restarted
    down = [a for a in answers if stopped < a.at and a.at + a.seconds < starting]
    down = [a for a in down if a.kind == "ready"]
    assert down and all(a.status == 503 for a in down)
    # Back: after the first success, every request of every kind succeeds again.
    back = min(a.at + a.seconds for a in answers if a.at > started and a.status < 300)
    after = [a for a in answers if a.at > back + 0.5]
    assert after and Counter(a.status for a in after) <= Counter({200: 10**6, 201: 10**6})
    assert {a.kind for a in after} == {"page", "read", "write", "ready", "health"}
    # Every acknowledged batch exactly once, whole; every key stored once.
    with Session(engine) as session:
        keys = Counter(session.scalars(select(Batch.idempotency_key)).all())
        stored = session.scalar(select(func.count()).select_from(Batch))
    assert acknowledged and all(keys[key] == 1 for key in acknowledged)
    assert len(set(acknowledged.values())) == len(acknowledged)
    assert max(keys.values()) == 1 and stored == len(keys)
    assert_whole(engine)
    failed_503s = [a.at for a in refused]
    print(
        f"\nrestart: stop at {stopping:.1f} s, down {stopped:.1f}-{started:.1f} s; "
        f"503s from {min(failed_503s):.1f} to {max(failed_503s):.1f} s ({len(refused)} answers, "
        f"slowest {max(a.seconds for a in refused):.2f} s); first success "
        f"{back - started:.2f} s after the start; {len(answers)} requests, "
        f"{len(acknowledged)} batches acknowledged"
    )


# --- a full disk ---------------------------------------------------------------------------

ROOM_KB = 64  # left for new observations on the small disk: less than the big batch needs
MOVED = ("observation", "observationrevision")  # the tables put on the small disk


@contextmanager
def small_filesystem(path: Path, kilobytes: int) -> Iterator[Path]:
    """A tmpfs of `kilobytes` at `path`, owned by the server's user; unmounted afterwards.
    It needs root (mounting), as the CI machine runs; elsewhere the test is skipped."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k,mode=0700", "tmpfs", str(path)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a small filesystem stands in for a full disk: {mounted.stderr.strip()}")
    try:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def test_a_submission_that_does_not_fit_on_a_full_postgresql_disk_is_507(cluster, tmp_path):
    settings = tiny_city_settings(cluster, tmp_path)
    engine, _ = initialise(settings)
    app = create_app(settings)
    app.config["TESTING"] = True
    client = app.test_client()
    token = token_for(engine)
    assert post(client, token, observations(0, 30)).status_code == 201
    used = sum(
        int(cluster.psql(f"SELECT pg_total_relation_size('{table}')", "tracker")) for table in MOVED
    )
    with small_filesystem(cluster.root / "small", used // 1024 + ROOM_KB) as small:
        try:
            # The observations and their revisions (tables and indexes) move onto the
            # small disk; batches, audit and WAL stay on the big one, as a disk filling
            # up with the largest tables would leave them.
            cluster.psql(f"CREATE TABLESPACE small LOCATION '{small}'")
            for table in MOVED:
                cluster.psql(f"ALTER TABLE {table} SET TABLESPACE small", "tracker")
                for index in cluster.psql(
                    f"SELECT indexname FROM pg_indexes WHERE tablename = '{table}'", "tracker"
                ).split():
                    cluster.psql(f"ALTER INDEX {index} SET TABLESPACE small", "tracker")
            before = batch_sizes(engine)
            answer = post(client, token, observations(100, 3000))
            assert answer.status_code == 507, answer.get_data(as_text=True)
            assert answer.get_json() == {"error": FULL}
            assert "Retry-After" not in answer.headers  # waiting will not make room
            assert client.get("/feeds").status_code == 200  # reads go on
            assert client.get("/api/v1/places").status_code == 200
            assert batch_sizes(engine) == before  # nothing of it stored, the rest intact
            # Room again: the same batch is stored whole.
            subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
            assert post(client, token, observations(100, 3000)).status_code == 201
            assert_whole(engine)
            assert len(batch_sizes(engine)) == len(before) + 1
        finally:
            # The cluster (this test's own) stops before its small disk is unmounted.
            app.extensions["engine"].dispose()
            engine.dispose()
            cluster.stop("immediate")
