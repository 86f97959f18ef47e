"""Ingest benchmark: 100,000 observations through the HTTP API against a raw bulk insert.

    .venv/bin/python bench/ingest.py                      # both backends
    .venv/bin/python bench/ingest.py --backend sqlite     # one
    .venv/bin/python bench/ingest.py --profile            # and where a request's time goes

A synthetic city (100 neighbourhoods in 10 areas, one agency with 10 weekly measures) and
100,000 distinct observations: 10 measures × 100 neighbourhoods × 100 weeks, as 10
batches of 10,000 rows (ten weeks each). In the same run, on each backend:

- raw (median of --repeat runs, each on a fresh database), the same 10 batches, one
  transaction each: `executemany` on SQLite (through the app's engine, so with its WAL /
  synchronous=NORMAL / foreign_keys pragmas), psycopg 3 `COPY … FROM STDIN` on
  PostgreSQL, into
  - plain: a table with the observation table's columns, primary key, unique
    (measure, place, dims, date) key and (batch) index, no foreign
    keys: exactly what the tracker writes for a new value (one row; the script checks
    the shape against the Observation model). The baseline of the target (API ≥ 1/3);
  - keys: the same table with foreign keys to node, place and batch, as the
    observation table had before migration 0004: what those keys cost;
- API json / API csv: the app under gunicorn (`gunicorn -w 2 wsgi:app`, as in
  production) on 127.0.0.1, each format on a fresh database, 10 POSTs with requests;
  the wall time of the 10 requests (bodies built beforehand; a few dry-run requests
  first so that the workers have imported and connected);
- roll-up after write: with a roll-up cache warmed before it (as a web worker holds
  one), a 1,000-row POST (10 measures × 100 neighbourhoods on today's date: new rows in
  the first cycle, revisions after), then the full city roll-up through
  `tracker.rollup.rollup`; median and worst of --cycles cycles (target ≤ 200 ms), on
  the database as the API left it, then again after `ANALYZE`.

A 10,000-row request is 0.26 MB of CSV or 0.75 MB of JSON: under the default 10 MB body
limit (TRACKER_MAX_UPLOAD_MB), so no setting is raised; there is no row-count limit.

PostgreSQL: a throwaway database is created on --postgres for each run and dropped after.
"""

import argparse
import cProfile
import gc
import json
import math
import os
import pstats
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import requests
from sqlalchemy import Engine, UniqueConstraint, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker import create_app  # noqa: E402
from tracker.auth import issue_token  # noqa: E402
from tracker.cli import initialise  # noqa: E402
from tracker.db import session_scope  # noqa: E402
from tracker.models import Observation, ObservationRevision  # noqa: E402
from tracker.rollup import RollupCache, load_definitions, rollup  # noqa: E402
from tracker.settings import Settings  # noqa: E402

NEIGHBOURHOODS, AREAS, MEASURES, WEEKS = 100, 10, 10, 100
REQUESTS = 10  # of NEIGHBOURHOODS × MEASURES × WEEKS / REQUESTS = 10,000 rows each
KINDS = [("cumulative", "sum"), ("level", "mean"), ("flow", "sum")]
AGENCY = "bench"
FORMATS = ("json", "csv")

Row = tuple[str, str, date, float]  # measure, place, date, value


# --- the city and its rows ------------------------------------------------------------------


def write_city(folder: Path, start: date, due: date) -> Path:
    """Boundaries and a results tree for the synthetic city; returns the tree's path."""
    side = math.ceil(math.sqrt(NEIGHBOURHOODS))
    features = []
    for n in range(NEIGHBOURHOODS):
        x, y = 172.5 + (n % side) * 0.01, -43.6 + (n // side) * 0.01
        ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
        features.append(
            {
                "type": "Feature",
                "properties": {"id": place(n), "name": f"Suburb {n}", "ward": f"Ward {n % AREAS}"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    (folder / "places.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    places = [place(n) for n in range(NEIGHBOURHOODS)]
    measures = []
    for m in range(MEASURES):
        kind, how = KINDS[m % len(KINDS)]
        target: object = {p: 1000 for p in places} if kind == "cumulative" else 80
        if kind == "flow":
            target = 5000 * NEIGHBOURHOODS
        measures.append(
            {
                "id": measure(m),
                "title": f"Measure {m}",
                "type": "output",
                "unit": "things",
                "kind": kind,
                "aggregate": how,
                "frequency": "weekly",
                "start": start.isoformat(),
                "due": due.isoformat(),
                "target": target,
                "places": places,
            }
        )
    outputs = [
        {"id": f"o{o}", "agency": AGENCY, "title": f"Output {o}", "measures": measures[o::5]}
        for o in range(5)
    ]
    tree = {
        "version": 1,
        "city": {"id": "synth", "name": "Synthetic City"},
        "places": {
            "boundaries": "places.geojson",
            "id_property": "id",
            "name_property": "name",
            "area_property": "ward",
        },
        "agencies": [{"id": AGENCY, "name": "Bench Agency"}],
        "results": [
            {"id": f"r{r}", "title": f"Result {r}", "outputs": outputs[r::2]} for r in range(2)
        ],
    }
    path = folder / "tree.yaml"
    path.write_text(json.dumps(tree))  # JSON is YAML
    return path


def place(n: int) -> str:
    return f"n{n:03d}"


def measure(m: int) -> str:
    return f"m{m:02d}"


def ingest_batches(first: date) -> list[list[Row]]:
    """REQUESTS batches of distinct rows, each batch ten consecutive weeks of every series."""
    rng = random.Random(7)
    levels = dict.fromkeys(((m, n) for m in range(MEASURES) for n in range(NEIGHBOURHOODS)), 0.0)
    rows: list[Row] = []
    for w in range(WEEKS):
        day = first + timedelta(days=7 * w)
        for m in range(MEASURES):
            kind = KINDS[m % len(KINDS)][0]
            for n in range(NEIGHBOURHOODS):
                step = rng.random() * 4
                value = levels[m, n] + step if kind == "cumulative" else step * 20
                levels[m, n] = value
                rows.append((measure(m), place(n), day, round(value, 2)))
    size = len(rows) // REQUESTS
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def body(rows: list[Row], fmt: str) -> bytes:
    """A POST /api/v1/observations body (CONTRACT §4) in `fmt`."""
    if fmt == "json":
        observations = [
            {"measure": m, "place": p, "date": d.isoformat(), "value": v} for m, p, d, v in rows
        ]
        return json.dumps({"observations": observations}).encode()
    lines = ["measure,place,date,value", *(f"{m},{p},{d.isoformat()},{v!r}" for m, p, d, v in rows)]
    return ("\n".join(lines) + "\n").encode()


CONTENT_TYPES = {"json": "application/json", "csv": "text/csv"}


# --- databases ------------------------------------------------------------------------------


@contextmanager
def fresh_database(backend: str, folder: Path, label: str, server: str) -> Iterator[str]:
    """The URL of a new empty database: an SQLite file, or a throwaway PostgreSQL one."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}/{label}-{uuid.uuid4().hex[:8]}.sqlite3"
        return
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"tracker_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


RAW_TABLE = """
CREATE TABLE raw_observation (
    id {serial} PRIMARY KEY,
    measure_id VARCHAR(100) NOT NULL {measure_key}, place_id VARCHAR(100) NOT NULL {place_key},
    date DATE NOT NULL, dims_key VARCHAR(200) NOT NULL, value {float}, revisions INTEGER NOT NULL,
    batch_id INTEGER NOT NULL {batch_key}, received_at {time} NOT NULL,
    first_received_at {time} NOT NULL, note VARCHAR(1000),
    CONSTRAINT uq_raw_observation UNIQUE (measure_id, place_id, dims_key, date));
CREATE INDEX ix_raw_observation_batch_id ON raw_observation (batch_id)"""
TYPES = {
    "sqlite": {"serial": "INTEGER NOT NULL", "float": "FLOAT", "time": "DATETIME"},
    "postgresql": {
        "serial": "SERIAL",
        "float": "DOUBLE PRECISION",
        "time": "TIMESTAMP WITH TIME ZONE",
    },
}
KEYS = {
    "measure_key": "REFERENCES node (id)",
    "place_key": "REFERENCES place (id)",
    "batch_key": "REFERENCES batch (id)",
}
OBS_COLUMNS = (
    "measure_id, place_id, date, dims_key, value, revisions, batch_id, received_at,"
    " first_received_at, note"
)
RAW_KINDS = {
    "plain": "plain observation table (the baseline)",
    "keys": "the same + foreign keys to node, place, batch",
}


def index_shape(engine: Engine, table: str) -> set[tuple[bool, tuple[str, ...]]]:
    """(unique, columns) of a table's primary key, unique constraints and indexes."""
    found = inspect(engine)
    shape = {(True, tuple(found.get_pk_constraint(table)["constrained_columns"]))}
    shape |= {(True, tuple(u["column_names"])) for u in found.get_unique_constraints(table)}
    shape |= {(bool(i["unique"]), tuple(i["column_names"])) for i in found.get_indexes(table)}
    return shape


def model_shape(model) -> set[tuple[bool, tuple[str, ...]]]:
    """The same for a model's table as the migrations create it (tracker/models.py)."""
    table = model.__table__
    shape = {(True, tuple(c.name for c in table.primary_key))}
    shape |= {
        (True, tuple(c.name for c in u.columns))
        for u in table.constraints
        if isinstance(u, UniqueConstraint)
    }
    shape |= {(bool(i.unique), tuple(c.name for c in i.columns)) for i in table.indexes}
    return shape


def check_raw_schema(engine: Engine) -> None:
    """The raw table carries exactly the observation table's columns, keys and indexes."""
    app, raw = model_shape(Observation), index_shape(engine, "raw_observation")
    assert app == raw, (app, raw)
    columns = {c["name"] for c in inspect(engine).get_columns("raw_observation")}
    assert columns == set(Observation.__table__.columns.keys()), columns


def raw_ingest(engine: Engine, batches: list[list[Row]], kind: str) -> float:
    """Seconds of the raw insert of every batch into raw_observation, one transaction per
    batch, in a migrated database with the city loaded (so that the foreign keys of
    `keys` have rows to point at; a Batch row per batch is made beforehand, untimed)."""
    dbapi = engine.raw_connection()
    connection = dbapi.driver_connection
    postgres = engine.dialect.name == "postgresql"
    cursor = connection.cursor()
    cursor.executemany(
        "INSERT INTO batch (id, agency_id, channel, received_at, accepted, revised, "
        "unchanged) VALUES (%s, %s, 'api', now(), 0, 0, 0)"
        if postgres
        else "INSERT INTO batch (id, agency_id, channel, received_at, accepted, revised, "
        "unchanged) VALUES (?, ?, 'api', datetime('now'), 0, 0, 0)",
        [(number, AGENCY) for number in range(1, len(batches) + 1)],
    )
    keys = KEYS if kind == "keys" else dict.fromkeys(KEYS, "")
    for statement in RAW_TABLE.format(**TYPES[engine.dialect.name], **keys).split(";"):
        cursor.execute(statement)
    connection.commit()
    check_raw_schema(engine)

    seconds = 0.0
    for number, batch in enumerate(batches, start=1):
        now = datetime.now(UTC)
        # SQLite stores what SQLAlchemy would: ISO text for the date and the time.
        received = now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
        observations = [
            (m, p, d if postgres else d.isoformat(), "", v, 1, number, received, received, None)
            for m, p, d, v in batch
        ]
        started = time.perf_counter()
        if postgres:
            with cursor.copy(f"COPY raw_observation ({OBS_COLUMNS}) FROM STDIN") as copy:
                for row in observations:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(observations[0]))
            cursor.executemany(
                f"INSERT INTO raw_observation ({OBS_COLUMNS}) VALUES ({marks})", observations
            )
        connection.commit()
        seconds += time.perf_counter() - started
    cursor.execute("SELECT count(*) FROM raw_observation")
    assert cursor.fetchone()[0] == sum(len(b) for b in batches)
    cursor.close()
    dbapi.close()
    return seconds


# --- the app under gunicorn -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn(settings: Settings, workers: int, log: Path) -> Iterator[str]:
    """`gunicorn wsgi:app` on a free local port, configured by TRACKER_* variables."""
    port = free_port()
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": settings.database_url,
        "TRACKER_TREE": str(settings.tree),
        "TRACKER_INSTANCE_PATH": str(settings.instance_path),
        "TRACKER_SECRET_KEY": "bench",
    }
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
               "--no-control-socket", "wsgi:app"]  # fmt: skip
    with log.open("ab") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/api/openapi.json", timeout=10).ok:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def post(base: str, token: str, payload: bytes, fmt: str, query: str = "") -> dict:
    answer = requests.post(
        f"{base}/api/v1/observations{query}",
        data=payload,
        headers={"Authorization": f"Bearer {token}", "Content-Type": CONTENT_TYPES[fmt]},
        timeout=300,
    )
    assert answer.status_code == 201, (answer.status_code, answer.text[:2000])
    return answer.json()


def prepare(url: str, tree_path: Path, folder: Path) -> tuple[Settings, Engine, str]:
    """Migrate and load the tree into `url`; the settings, an engine and an agency token."""
    settings = Settings(
        database_url=url,
        tree=tree_path,
        instance_path=folder / "instance",
        secret_key="bench",
        _env_file=None,
    )
    engine, _ = initialise(settings)
    with session_scope(engine) as session:
        token = issue_token(session, AGENCY, "bench")
    return settings, engine, token


def api_ingest(
    url: str, fmt: str, batches: list[list[Row]], tree_path: Path, folder: Path, args
) -> dict[str, object]:
    """The 10 timed POSTs in `fmt`, then the roll-up-after-write cycles."""
    settings, engine, token = prepare(url, tree_path, folder)
    bodies = [body(batch, fmt) for batch in batches]
    limit = settings.max_upload_mb * 1024 * 1024
    assert max(map(len, bodies)) < limit, "a body exceeds TRACKER_MAX_UPLOAD_MB"
    figures: dict[str, object] = {"body_mb": statistics.mean(map(len, bodies)) / 1e6}
    try:
        with gunicorn(settings, args.workers, folder / "gunicorn.log") as base:
            sample = body(batches[0][:1], fmt)
            for _ in range(3 * args.workers):  # every worker imports, connects, reads the tree
                post(base, token, sample, fmt, "?dry_run=1")
            times = []
            for payload, batch in zip(bodies, batches, strict=True):
                started = time.perf_counter()
                answer = post(base, token, payload, fmt)
                times.append(time.perf_counter() - started)
                assert answer["accepted"] == len(batch), answer
                assert answer["revised"] == answer["unchanged"] == 0, answer
            with Session(engine) as session:
                stored = session.scalar(select(func.count()).select_from(Observation))
                replaced = session.scalar(select(func.count()).select_from(ObservationRevision))
            assert (stored, replaced) == (sum(map(len, batches)), 0)
            figures["request_s"] = times
            figures.update(after_write(engine, base, token, args.cycles))
    finally:
        engine.dispose()
    return figures


def after_write(engine: Engine, base: str, token: str, cycles: int) -> dict[str, object]:
    """1,000 rows through the API, then the full city roll-up with a warm cache: `cycles`
    times on the database as the API left it, then as many again after ANALYZE."""
    gc.freeze()  # as a web worker starts (tracker.create_worker_app)
    cache = RollupCache()
    with Session(engine) as session:
        tree = load_definitions(session, cache)
        city, day = tree.city_id, tree.today()
        started = time.perf_counter()
        rollup(session, place_id=city, on=day, cache=cache)
        figures: dict[str, object] = {"cold_rollup_s": time.perf_counter() - started}
    values = iter(range(1, 2 * cycles + 1))  # a new value every cycle: 1,000 revisions
    for phase in ("", "_analyzed"):
        if phase:
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
        submit, after = [], []
        for _ in range(cycles):
            value = next(values)
            rows = [
                {"measure": measure(m), "place": place(n), "date": day.isoformat(), "value": value}
                for m in range(MEASURES)
                for n in range(NEIGHBOURHOODS)
            ]
            with Session(engine) as session:
                rollup(session, place_id=city, on=day, cache=cache)  # warm: what a worker holds
            started = time.perf_counter()
            answer = post(base, token, json.dumps({"observations": rows}).encode(), "json")
            submit.append(time.perf_counter() - started)
            assert answer["accepted"] == len(rows) == 1000
            assert answer["revised"] == (0 if value == 1 else len(rows)), answer
            with Session(engine) as session:
                started = time.perf_counter()
                found = rollup(session, place_id=city, on=day, cache=cache)
                after.append(time.perf_counter() - started)
            level = found.find(measure(1)).measure  # a mean: every place sent `value`
            assert level.as_of == day and level.value == value, level
        figures[f"submit_1000{phase}_s"] = submit
        figures[f"after_write{phase}_s"] = after
    return figures


# --- where a request's time goes ----------------------------------------------------------


def profile(url: str, fmt: str, batches: list[list[Row]], tree_path: Path, folder: Path) -> None:
    """cProfile of the 10 requests through the Flask app in this process (no server)."""
    settings, engine, token = prepare(url, tree_path, folder)
    app = create_app(settings)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": CONTENT_TYPES[fmt]}
    bodies = [body(batch, fmt) for batch in batches]
    client.post("/api/v1/observations?dry_run=1", data=body(batches[0][:1], fmt), headers=headers)
    profiler = cProfile.Profile()
    started = time.perf_counter()
    for payload in bodies:
        profiler.enable()
        answer = client.post("/api/v1/observations", data=payload, headers=headers)
        profiler.disable()
        assert answer.status_code == 201, answer.get_data(as_text=True)[:2000]
    print(f"\nprofile, {fmt}: {time.perf_counter() - started:.2f} s in-process (with profiler)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(45)
    app.extensions["engine"].dispose()
    engine.dispose()


# --- the run --------------------------------------------------------------------------------


def rate(rows: int, seconds: float) -> str:
    return f"{seconds:6.2f} s {rows / seconds:>9,.0f} rows/s"


def ms(values: list[float]) -> str:
    cycles = " ".join(f"{v * 1000:.0f}" for v in values)
    middle, worst = statistics.median(values) * 1000, max(values) * 1000
    return f"median {middle:.1f} ms, max {worst:.1f} ms ({cycles})"


def bench(backend: str, args, folder: Path, batches, tree_path: Path) -> None:
    rows = sum(map(len, batches))

    def run(label: str):
        return fresh_database(backend, folder, label, args.postgres)

    raw: dict[str, list[float]] = {kind: [] for kind in RAW_KINDS}
    for _ in range(args.repeat):
        for kind in RAW_KINDS:
            with run(f"raw-{kind}") as url:
                _settings, engine, _token = prepare(url, tree_path, folder)
                try:
                    raw[kind].append(raw_ingest(engine, batches, kind))
                finally:
                    engine.dispose()
    results = {}
    for fmt in FORMATS:
        with run(f"api-{fmt}") as url:
            results[fmt] = api_ingest(url, fmt, batches, tree_path, folder, args)

    name = "executemany" if backend == "sqlite" else "COPY"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{backend}: {rows:,} rows as {len(batches)} batches of {len(batches[0]):,}"
          f" (load average now {load})")  # fmt: skip
    base = statistics.median(raw["plain"])
    for kind, label in RAW_KINDS.items():
        seconds = statistics.median(raw[kind])
        spread = ", ".join(f"{s:.2f}" for s in raw[kind])
        print(f"  {'raw ' + name + ', ' + label:59} {rate(rows, seconds)}  (runs: {spread} s)")
    for fmt, figures in results.items():
        seconds = sum(figures["request_s"])
        ratios = ", ".join(f"{statistics.median(raw[k]) / seconds:.3f} of {k}" for k in RAW_KINDS)
        print(
            f"  API {fmt:4} ({figures['body_mb']:.2f} MB a request){'':29} {rate(rows, seconds)}"
            f"  ratio {base / seconds:.3f} (target ≥ 0.333; {ratios});"
            f" requests {min(figures['request_s']):.2f}–{max(figures['request_s']):.2f} s"
        )
    for fmt, figures in results.items():
        print(
            f"  after the {fmt} ingest: cold city roll-up {figures['cold_rollup_s'] * 1000:.0f} ms"
        )
        for phase, label in (("", "as the API left it"), ("_analyzed", "after ANALYZE")):
            print(
                f"    {label:19}: 1,000-row POST {ms(figures[f'submit_1000{phase}_s'])};"
                f" roll-up after it (warm cache, target ≤ 200 ms)"
                f" {ms(figures[f'after_write{phase}_s'])}"
            )
    if args.profile:
        for fmt in FORMATS:
            with run(f"profile-{fmt}") as url:
                profile(url, fmt, batches, tree_path, folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--cycles", type=int, default=5, help="roll-up-after-write cycles")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each raw baseline")
    parser.add_argument("--profile", action="store_true", help="cProfile the request handler")
    args = parser.parse_args()
    today = date.today()
    first = today - timedelta(days=7 * WEEKS)
    batches = ingest_batches(first)
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            tree_path = write_city(Path(folder), first - timedelta(days=7), today + timedelta(400))
            bench(backend, args, Path(folder), batches, tree_path)


if __name__ == "__main__":
    main()
