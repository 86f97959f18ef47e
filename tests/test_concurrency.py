"""Several agencies writing at once through a real server lose nothing and never lock up.

A real gunicorn server (several worker processes, each with threads) serves the app on
the test database, SQLite or PostgreSQL. Many `requests` clients of two agencies post
batches of observations (JSON and CSV) and works at the same time: new rows, revisions of
each client's own rows and revisions of rows every client of the agency writes, so writers
contend for the same keys. Afterwards every answer was a 201, the server logged no error,
and the database and the GET endpoints hold exactly what was sent: every row, every
revision in order, the latest value of each key, every work.

Run with `pytest -s tests/test_concurrency.py` to see the measured throughput.
"""

import csv
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from sqlmodel import Session

from tracker.auth import issue_token
from tracker.models import (
    Batch,
    Observation,
    ObservationRevision,
    Work,
    WorkPlace,
    WorkStatusChange,
    every_revision,
)

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 3  # gunicorn worker processes …
THREADS = 3  # … each serving this many requests at once
CLIENTS_PER_AGENCY = 4
BATCHES = 15  # observation batches per client
PRIVATE_ROWS = 40  # new keys of this client in each batch
ROLLING_ROWS = 5  # this client's keys, revised in every batch
SHARED_ROWS = 5  # keys every client of the agency revises in every batch
ROWS = PRIVATE_ROWS + ROLLING_ROWS + SHARED_ROWS
WORKS_AFTER = (4, 9, 14)  # after these observation batches a client upserts its works
PRIVATE_WORKS = 8
SHARED_WORKS = 2
REQUEST_TIMEOUT = (5, 60)  # connect, read (seconds)
RUN_TIMEOUT = 120  # the whole load, seconds: the test stops by itself

# Keys are told apart by date, counted in days from BASE_DAY: private 0-2399, rolling
# 2400-2434, shared 2500-2504, idempotency rounds 2600-3199 (all before 2022).
BASE_DAY = date(2013, 1, 1)
PLACES = ("opawa", "st-albans", "riccarton")
AGES = ("0-14", "15-64", "65+")
CENTRES = {  # inside each tiny-city neighbourhood
    "opawa": (172.605, -43.535),
    "st-albans": (172.615, -43.535),
    "riccarton": (172.605, -43.525),
    "red-zone-park": (172.615, -43.525),
}
# Each agency's own measures (tests/fixtures/tiny_city/tree.yaml): (id, has the age dimension).
MEASURES = {
    "eqc": (("homes-repaired", False),),
    "council": (("wellbeing-score", False), ("people-supported", True)),
}
FLOWS = {"people-supported"}  # kind: flow — its series is a running total
LOG_PROBLEMS = ("database is locked", "deadlock", "Traceback", "[ERROR]", "[CRITICAL]")


# --- the server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    base: str
    log: Path

    def log_problems(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if any(p in line for p in LOG_PROBLEMS)]


@pytest.fixture
def server(settings, loaded, tmp_path):
    """gunicorn on a free port with several workers and threads, on this test's database."""
    port = _free_port()
    log = tmp_path / "server.log"
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": settings.database_url,
        "TRACKER_TREE": str(settings.tree),
        "TRACKER_INSTANCE_PATH": str(settings.instance_path),
        "TRACKER_SECRET_KEY": "test-secret",
        "TRACKER_SECURE_COOKIES": "false",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "gthread",
        "--threads",
        str(THREADS),
        "--timeout",
        "60",
        "--graceful-timeout",
        "5",
        "wsgi:app",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
            try:
                if requests.get(base + "/api/openapi.json", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.2)
        yield Server(base, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass(frozen=True)
class Client:
    agency: str
    index: int  # among the agency's clients
    token: str


@pytest.fixture
def clients(loaded) -> list[Client]:
    """CLIENTS_PER_AGENCY clients of each agency, each with its own token."""
    engine, _ = loaded
    with Session(engine) as session:
        made = [
            Client(agency, index, issue_token(session, agency, f"client {index}"))
            for agency in MEASURES
            for index in range(CLIENTS_PER_AGENCY)
        ]
        session.commit()
    return made


# --- what the clients send -----------------------------------------------------------------


def _row(agency: str, slot: int, day: int, value: float | None) -> dict[str, Any]:
    """An observation of one of the agency's measures, picked (with place and age) by slot."""
    measures = MEASURES[agency]
    measure, has_age = measures[slot % len(measures)]
    row = {
        "measure": measure,
        "place": PLACES[slot % len(PLACES)],
        "date": (BASE_DAY + timedelta(days=day)).isoformat(),
        "value": value,
    }
    if has_age:
        row["dims"] = {"age": AGES[(slot // len(measures)) % len(AGES)]}
    return row


def observation_rows(agency: str, index: int, batch: int) -> list[dict[str, Any]]:
    """One batch: new keys, the client's rolling keys and the agency's shared keys, shuffled.

    Every row changes its key's value, so each row is a new observation or a revision.
    """
    last = batch == BATCHES - 1
    first_day = (index * BATCHES + batch) * PRIVATE_ROWS
    private = [
        _row(agency, r, first_day + r, index * 100_000 + batch * 100 + r)
        for r in range(PRIVATE_ROWS)
    ]
    rolling = [  # the last batch retracts the first rolling key (null / an empty CSV cell)
        _row(agency, k, 2400 + index * 10 + k, None if last and k == 0 else 1000 * (batch + 1) + k)
        for k in range(ROLLING_ROWS)
    ]
    shared = [_row(agency, k, 2500 + k, 500_000 + index * 1000 + batch) for k in range(SHARED_ROWS)]
    rows = private + rolling + shared
    random.Random(f"{agency}-{index}-{batch}").shuffle(rows)  # no common lock order
    return rows


def works_rows(agency: str, index: int, round_: int) -> list[dict[str, Any]]:
    """The client's works, planned → in progress → complete, and the agency's shared works."""
    rows = []
    for n in range(PRIVATE_WORKS):
        lon, lat = CENTRES[list(CENTRES)[n % len(CENTRES)]]
        row = {
            "id": f"c{index}-w{n}",
            "title": f"{agency} work {n} of client {index}",
            "status": ("planned", "in_progress", "complete")[round_],
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "planned_start": "2014-01-01",
            "planned_end": "2014-12-31",
        }
        if round_ >= 1:
            row["actual_start"] = "2014-02-01"
        if round_ == 2:
            row["actual_end"] = "2014-06-30"
            if agency == "council":
                row.update(measure="pipes-relaid", quantity=0.25)
        rows.append(row)
    for k in range(SHARED_WORKS):
        lon, lat = CENTRES[PLACES[k]]
        rows.append(
            {
                "id": f"shared-{k}",
                "title": f"shared {k}: client {index} round {round_}",
                "status": "planned",
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
            }
        )
    return rows


def observations_csv(rows: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["measure", "place", "date", "value", "dim.age"])
    for row in rows:
        value = "" if row["value"] is None else repr(row["value"])
        age = row.get("dims", {}).get("age", "")
        writer.writerow([row["measure"], row["place"], row["date"], value, age])
    return out.getvalue().encode()


def works_csv(rows: list[dict[str, Any]]) -> bytes:
    columns = ["id", "title", "status", "lon", "lat", "planned_start", "planned_end"]
    columns += ["actual_start", "actual_end", "measure", "quantity"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k != "geometry"}
        flat["lon"], flat["lat"] = row["geometry"]["coordinates"]
        writer.writerow(flat)
    return out.getvalue().encode()


def key_of(row: dict[str, Any]) -> tuple[str, str, str, str]:
    dims = row.get("dims") or {}
    return (row["measure"], row["place"], row["date"], "|".join(f"{k}={dims[k]}" for k in dims))


@dataclass
class Answer:
    client: Client
    path: str
    content_type: str
    rows: int
    status: int
    text: str
    seconds: float

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.text)


def post(http, base, client, path, body, content_type, rows, key=None) -> Answer:
    headers = {"Authorization": f"Bearer {client.token}", "Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    started = time.perf_counter()
    answer = http.post(f"{base}/api/v1/{path}", data=body, headers=headers, timeout=REQUEST_TIMEOUT)
    return Answer(
        client,
        path,
        content_type,
        rows,
        answer.status_code,
        answer.text,
        time.perf_counter() - started,
    )


def run_client(base: str, client: Client, start: threading.Barrier) -> list[Answer]:
    """Every batch of one client, one after another, as fast as the server answers."""
    answers = []
    with requests.Session() as http:
        start.wait(timeout=30)
        for batch in range(BATCHES):
            rows = observation_rows(client.agency, client.index, batch)
            if batch % 2:
                body, kind = observations_csv(rows), "text/csv"
            else:
                body, kind = json.dumps({"observations": rows}).encode(), "application/json"
            answers.append(post(http, base, client, "observations", body, kind, len(rows)))
            if batch in WORKS_AFTER:
                round_ = WORKS_AFTER.index(batch)
                works = works_rows(client.agency, client.index, round_)
                if round_ % 2:
                    body, kind = works_csv(works), "text/csv"
                else:
                    body, kind = json.dumps({"works": works}).encode(), "application/json"
                answers.append(post(http, base, client, "works", body, kind, len(works)))
    return answers


def run_all(tasks: list, workers: int) -> list:
    """Run the callables at once; every one's result, or fail when the deadline passes."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result(timeout=max(0.1, deadline - time.monotonic())) for f in futures]


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def refused(answers: list[Answer], wanted: int = 201) -> list[str]:
    return [
        f"{a.status} {a.client.agency}#{a.client.index} {a.path} {a.content_type}: {a.text[:300]}"
        for a in answers
        if a.status != wanted or "database is locked" in a.text
    ]


# --- the test ---------------------------------------------------------------------------------


def test_agencies_writing_at_once_lose_nothing(server, clients, loaded, database_url):
    engine, _ = loaded
    start = threading.Barrier(len(clients))
    started = time.perf_counter()
    answers = [
        a
        for batch in run_all(
            [partial(run_client, server.base, c, start) for c in clients], len(clients)
        )
        for a in batch
    ]
    wall = time.perf_counter() - started

    # Every batch was stored, and the server logged no error.
    assert refused(answers) == [], "\n".join(refused(answers)[:10])
    assert server.log_problems() == [], "\n".join(server.log_problems()[:20])

    observed = [a for a in answers if a.path == "observations"]
    worked = [a for a in answers if a.path == "works"]
    rows = sum(a.rows for a in observed)
    work_rows = sum(a.rows for a in worked)
    assert len(observed) == len(clients) * BATCHES
    assert rows == len(clients) * BATCHES * ROWS
    latencies = sorted(a.seconds for a in answers)
    print(
        f"\n[concurrency {backend(database_url)}] gunicorn {WORKERS} workers x {THREADS} "
        f"threads; {len(clients)} clients of {len(MEASURES)} agencies; "
        f"{len(answers)} batches ({len(observed)} observations, {len(worked)} works), "
        f"{rows} observation rows + {work_rows} work rows in {wall:.2f} s: "
        f"{(rows + work_rows) / wall:.0f} rows/s, {len(answers) / wall:.1f} batches/s; "
        f"latency median {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )

    # What each key was sent, in each client's order.
    sent: dict[tuple, list[tuple[Client, float | None]]] = defaultdict(list)
    for client in clients:
        for batch in range(BATCHES):
            for row in observation_rows(client.agency, client.index, batch):
                sent[key_of(row)].append((client, row["value"]))
    answered_revisions = sum(a.body["revised"] for a in observed)
    assert all(a.body["accepted"] == a.rows and a.body["unchanged"] == 0 for a in observed)

    with Session(engine) as session:
        stored = {
            (o.measure_id, o.place_id, o.date.isoformat(), o.dims_key): o
            for o in session.scalars(select(Observation))
        }
        history: dict[int, list[tuple[int, float | None]]] = defaultdict(list)
        revisions = every_revision()
        for obs_id, revision, value in session.execute(
            select(revisions.c.observation_id, revisions.c.revision, revisions.c.value).order_by(
                revisions.c.observation_id, revisions.c.revision
            )
        ):
            history[obs_id].append((revision, value))
        batch_ids = set(session.scalars(select(Batch.id)))
        works = {(w.agency_id, w.ref): w for w in session.scalars(select(Work))}
        changes = Counter(session.scalars(select(WorkStatusChange.work_id)))
        places = Counter(session.scalars(select(WorkPlace.work_id)))

    # Every batch is one stored batch, every key one observation.
    assert batch_ids == {a.body["batch"] for a in answers}
    assert set(stored) == set(sent)
    revision_rows = sum(len(h) for h in history.values())
    assert revision_rows == sum(len(values) for values in sent.values())
    assert answered_revisions == revision_rows - len(stored)

    # Every value sent is a revision, numbered 1..n in the order they were stored; the
    # observation holds the last one. One client's own writes keep their order.
    problems = []
    for key, values in sent.items():
        obs = stored[key]
        revisions = history[obs.id]
        numbers = [number for number, _ in revisions]
        stored_values = [value for _, value in revisions]
        if numbers != list(range(1, len(values) + 1)) or obs.revisions != len(values):
            problems.append(f"{key}: revisions {numbers}, counter {obs.revisions}")
        elif obs.value != stored_values[-1]:
            problems.append(f"{key}: value {obs.value}, last revision {stored_values[-1]}")
        elif Counter(stored_values) != Counter(v for _, v in values):
            problems.append(f"{key}: stored {stored_values}, sent {[v for _, v in values]}")
        else:
            for client in {c for c, _ in values}:
                own = [v for c, v in values if c == client]
                if [v for v in stored_values if v in own] != own:
                    problems.append(f"{key}: {client.agency}#{client.index}'s order lost")
    assert problems == [], "\n".join(problems[:10])
    shared = [k for k, v in sent.items() if len({c for c, _ in v}) > 1]
    assert len(shared) == len(MEASURES) * SHARED_ROWS
    assert all(stored[k].revisions == CLIENTS_PER_AGENCY * BATCHES for k in shared)

    # Works: each client's complete after three upserts, the shared ones once per agency.
    expected_works = {
        (c.agency, f"c{c.index}-w{n}") for c in clients for n in range(PRIVATE_WORKS)
    } | {(agency, f"shared-{k}") for agency in MEASURES for k in range(SHARED_WORKS)}
    assert set(works) == expected_works
    for (agency, ref), work in works.items():
        assert places[work.id] == 1, ref
        if ref.startswith("shared-"):
            assert work.status == "planned" and changes[work.id] == 1
            assert work.title.startswith(f"{ref.replace('-', ' ')}: client ")
        else:
            assert work.status == "complete" and changes[work.id] == 3, (agency, ref)

    # The public API reports the same, whichever worker answers.
    with requests.Session() as http:
        for _ in range(2):
            for measure, _ in (m for ms in MEASURES.values() for m in ms):
                for place in PLACES:
                    got = http.get(
                        f"{server.base}/api/v1/measures/{measure}/series",
                        params={"place": place},
                        timeout=REQUEST_TIMEOUT,
                    )
                    assert got.status_code == 200, got.text
                    points = [(p["date"], p["value"]) for p in got.json()]
                    assert points == expected_series(stored, measure, place)
            got = http.get(
                f"{server.base}/api/v1/works", params={"place": "tiny"}, timeout=REQUEST_TIMEOUT
            )
            assert got.status_code == 200, got.text
            features = {f["id"]: f["properties"]["status"] for f in got.json()["features"]}
            assert features == {f"{a}/{r}": w.status for (a, r), w in works.items()}
    assert server.log_problems() == [], "\n".join(server.log_problems()[:20])


def expected_series(stored, measure: str, place: str) -> list[tuple]:
    """A measure's series at one neighbourhood from the stored observations: a level or
    cumulative measure's value on each date, or a flow's running total (CONTRACT §4)."""
    rows = sorted(
        (day, o.value)
        for (m, p, day, _), o in stored.items()
        if m == measure and p == place and o.value is not None
    )
    adds_up = measure in FLOWS
    points: dict[str, float] = {}
    total = 0.0
    for day, value in rows:
        total += value
        points[day] = total if adds_up else value
    return list(points.items())


# --- retries with one Idempotency-Key at once -------------------------------------------


def test_concurrent_retries_with_one_idempotency_key_store_the_batch_once(
    server, clients, loaded, database_url
):
    """Clients sending one batch with one key at once all get the first answer (201, the
    same batch): the contract's replay. The key with another body at once: one 201, one 409."""
    engine, _ = loaded
    eqc = [c for c in clients if c.agency == "eqc"]
    rounds, senders = 6, 3

    def send(client, body, kind, key, start):
        with requests.Session() as http:
            start.wait(timeout=30)
            return post(http, server.base, client, "observations", body, kind, ROWS, key=key)

    def rows_for(round_: int, value: int) -> list[dict[str, Any]]:
        return [_row("eqc", r, 2600 + round_ * ROWS + r, value + r) for r in range(ROWS)]

    started = time.perf_counter()
    same, conflicting = [], []
    for round_ in range(rounds):
        rows = rows_for(round_, 1)
        if round_ % 2:
            body, kind = observations_csv(rows), "text/csv"
        else:
            body, kind = json.dumps({"observations": rows}).encode(), "application/json"
        start = threading.Barrier(senders)
        same.append(
            run_all(
                [partial(send, c, body, kind, f"retry-{round_}", start) for c in eqc[:senders]],
                senders,
            )
        )
    for round_ in range(rounds, 2 * rounds):
        start = threading.Barrier(2)
        bodies = [
            json.dumps({"observations": rows_for(round_, value)}).encode() for value in (1, 1000)
        ]
        conflicting.append(
            run_all(
                [
                    partial(send, c, b, "application/json", f"clash-{round_}", start)
                    for c, b in zip(eqc[:2], bodies, strict=True)
                ],
                2,
            )
        )
    wall = time.perf_counter() - started

    for answers in same:
        assert refused(answers) == [], "\n".join(refused(answers))
        assert len({a.text for a in answers}) == 1, [a.text for a in answers]
        assert answers[0].body["accepted"] == ROWS and answers[0].body["revised"] == 0
    for answers in conflicting:
        assert sorted(a.status for a in answers) == [201, 409], [a.text for a in answers]
        loser = next(a for a in answers if a.status == 409)
        assert "different body" in loser.body["error"]
    assert server.log_problems() == [], "\n".join(server.log_problems()[:20])
    print(
        f"\n[idempotency {backend(database_url)}] {rounds} rounds x {senders} identical "
        f"retries + {rounds} rounds x 2 clashing bodies in {wall:.2f} s"
    )

    with Session(engine) as session:
        keys = Counter(session.scalars(select(Batch.idempotency_key)))
        assert keys == {f"retry-{r}": 1 for r in range(rounds)} | {
            f"clash-{r}": 1 for r in range(rounds, 2 * rounds)
        }
        stored_batches = {
            key: batch_id
            for key, batch_id in session.execute(select(Batch.idempotency_key, Batch.id))
        }
        for round_, answers in enumerate(same):
            assert answers[0].body["batch"] == stored_batches[f"retry-{round_}"]
        count = session.scalar(select(func.count()).select_from(Observation))
        assert count == 2 * rounds * ROWS
        # Each value was stored once: no observation holds a replaced value.
        assert session.scalar(select(func.count()).select_from(ObservationRevision)) == 0
        # A clash stored the winner's values only.
        values = {
            (o.date.isoformat(), o.place_id): o.value for o in session.scalars(select(Observation))
        }
        for round_, answers in zip(range(rounds, 2 * rounds), conflicting, strict=True):
            winner = next(a for a in answers if a.status == 201).client
            base = 1 if winner == eqc[0] else 1000
            for r, row in enumerate(rows_for(round_, base)):
                assert values[(row["date"], row["place"])] == base + r
