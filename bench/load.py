"""Load test: the demo city served by gunicorn (2 workers), residents reading while agencies
and a feed write, for a fixed time; per-kind latencies and a check that no row was lost.

    .venv/bin/python bench/load.py                              # both backends, 60 s each
    .venv/bin/python bench/load.py --backend sqlite --seconds 30 --json /tmp/load.json

Everything runs on 127.0.0.1 and stops by itself (after --seconds, or --max-requests).

1. A scratch database: an SQLite file in a temporary folder, or a throwaway PostgreSQL
   database `tracker_load_<random>` on --postgres (dropped at the end). `tracker demo`
   loads the demo city into it (or --reuse URL names one already loaded: it is written
   to, never dropped). `tracker agency token` makes one token per writing agency.
2. gunicorn -c deploy/gunicorn.conf.py wsgi:app with TRACKER_GUNICORN_WORKERS=2 on a free
   port, its metrics folder in the scratch folder.
3. For --warmup seconds (default 30: pages are first built, as after a deploy) and then
   --seconds more: residents visiting pages by weight (RESIDENT_MIX), with ids read from
   the API and the database first — arriving at random at --rate a second (default 20)
   and sent by --residents client threads (default 8), or with --rate 0, --residents
   threads each opening page after page with no pause (a capacity test: latency then
   only says how long the queue was); --agencies threads (default 2, one agency each)
   POSTing a batch of --batch-min..--batch-max rows every --batch-every seconds
   (default 10; 0: back to back), each with its own Idempotency-Key, date and values (a
   tenth are sent twice: the replay must answer the same batch); and one feed thread
   running the tree's feed --feed every --feed-every seconds (default 10) through
   `run_feed` (the path `tracker import` takes), its URL pointed at a local HTTP server
   whose CSV values change on every fetch.
4. The report, for the measured seconds: per kind count, req/s, p50/p95/p99 ms (from the
   moment a visit arrived) and errors (non-2xx or exception), and the warm-up's page p99;
   then the row check, over both phases: every batch answered 201 holds exactly its rows
   (counted by batch id over observations and their revisions), its key is stored once,
   and no row appeared that no batch (agency or feed) accounts for.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker.feeds import run_feed  # noqa: E402
from tracker.models import Batch, Observation, ObservationRevision  # noqa: E402

# What a resident opens, by weight: mostly pages, some API reads, few exports.
RESIDENT_MIX = {
    "city page": 10,
    "place page": 20,
    "street page": 12,
    "measure page": 12,
    "result page": 10,
    "api rollup": 10,
    "api works": 10,
    "export rollup.csv": 4,
    "export places.geojson": 1,
}
PAGE_KINDS = ("city page", "place page", "street page", "measure page", "result page")
PAGE_P99_TARGET_MS = 500
# Agency batches are dated one day each, going back from here: before the demo series,
# so no batch overwrites another's cells or the demo's.
BATCH_DATES_END = date(2009, 12, 31)
FEED_DATES_END = date(2008, 12, 31)


# --- setup ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tracker(env: dict, *args: str) -> str:
    """Run the tracker CLI; its output."""
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "tracker"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode:
        raise RuntimeError(f"tracker {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


def start_server(env: dict, port: int, workers: int) -> subprocess.Popen:
    env = dict(env, TRACKER_GUNICORN_BIND=f"127.0.0.1:{port}")
    env["TRACKER_GUNICORN_WORKERS"] = str(workers)
    with open(Path(env["TRACKER_INSTANCE_PATH"]) / "gunicorn.log", "w") as log:
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,  # the child keeps its own copy of the file
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited at start; see gunicorn.log in the scratch folder")
        try:
            if requests.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(process)
    raise RuntimeError("gunicorn did not answer in 90 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FeedSource:
    """A local HTTP source for one CSV feed: each fetch gives the same cells, new values."""

    def __init__(self, fields: dict, places: list[str], rows: int):
        self.fields, self.places, self.rows = fields, places, rows
        self.fetches = 0
        self.lock = threading.Lock()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = source.body()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/feed.csv"

    def body(self) -> bytes:
        with self.lock:
            self.fetches += 1
            run = self.fetches
        f = self.fields
        lines = [f"{f['place']},{f['date']},{f['value']}"]
        for n in range(self.rows):
            day = FEED_DATES_END - timedelta(days=n // len(self.places))
            place = self.places[n % len(self.places)].replace(",", " ")
            lines.append(f"{place},{day},{run + n / 10000:.4f}")
        return ("\n".join(lines) + "\n").encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def writable_cells(engine, excluded_agency: str | None) -> dict[str, list[tuple[str, str]]]:
    """(measure, place) pairs with no dimensions that the demo stored, per agency."""
    with engine.connect() as connection:
        owners = dict(
            connection.execute(
                text(
                    "SELECT DISTINCT o.measure_id, b.agency_id FROM observation o "
                    "JOIN batch b ON b.id = o.batch_id"
                )
            ).all()
        )
        pairs = connection.execute(
            select(Observation.measure_id, Observation.place_id)
            .where(Observation.dims_key == "")
            .distinct()
        ).all()
        dimensioned = set(
            connection.scalars(
                select(Observation.measure_id).where(Observation.dims_key != "").distinct()
            )
        )
    cells: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for measure, place in sorted(pairs):
        agency = owners.get(measure)
        if agency and agency != excluded_agency and measure not in dimensioned:
            cells[agency].append((measure, place))
    return cells


def read_ids(base: str, engine) -> dict[str, list[str]]:
    """Places, results and measures from the API; streets from the database (the streets
    API wants a search term)."""
    places = requests.get(f"{base}/api/v1/places", timeout=60).json()["features"]
    place_ids = [p["properties"]["id"] for p in places if p["properties"]["level"] != "city"]
    rollup = requests.get(f"{base}/api/v1/rollup", timeout=120).json()
    results, measures = [], []

    def walk(node):
        (measures if node["kind"] == "measure" else results).append(node["id"])
        for child in node["children"]:
            walk(child)

    for node in rollup["results"]:
        walk(node)
    with engine.connect() as connection:
        streets = list(connection.scalars(text("SELECT id FROM street ORDER BY id")))
    return {"places": place_ids, "results": results, "measures": measures, "streets": streets}


# --- the workload ---------------------------------------------------------------------


class Recorder:
    """Every request's kind, when it was due, how long it took from then, and whether it
    succeeded; the report is cut from these by phase (warm-up, measured)."""

    def __init__(self, max_requests: int):
        self.lock = threading.Lock()
        self.records: list[tuple[str, float, float, bool, str]] = []
        self.left = max_requests

    def take(self) -> bool:
        """One more request allowed (the run is bounded in requests as well as time)."""
        with self.lock:
            self.left -= 1
            return self.left >= 0

    def record(self, kind: str, due: float, ok: bool, what: str = "") -> None:
        """`due`: the monotonic time the request was due (sent, or meant to be sent)."""
        with self.lock:
            self.records.append((kind, due, time.monotonic() - due, ok, what))


def timed(
    recorder: Recorder, kind: str, call, due: float | None = None
) -> requests.Response | None:
    """Run one request and record it. Its time counts from `due` when given: a request
    that waited for a free client thread waited as its visitor would have."""
    due = time.monotonic() if due is None else due
    try:
        response = call()
    except requests.RequestException as exc:
        recorder.record(kind, due, False, repr(exc)[:200])
        return None
    ok = 200 <= response.status_code < 300
    what = "" if ok else f"{response.status_code} {response.url} {response.text[:200]}"
    recorder.record(kind, due, ok, what)
    return response


def resident_request(rng: random.Random, ids: dict) -> tuple[str, str]:
    """What one resident opens next: (kind, path), drawn by RESIDENT_MIX."""
    kind = rng.choices(list(RESIDENT_MIX), list(RESIDENT_MIX.values()))[0]
    place = rng.choice(ids["places"])
    path = {
        "city page": "/",
        "place page": f"/places/{place}",
        "street page": f"/streets/{rng.choice(ids['streets'])}",
        "measure page": f"/measures/{rng.choice(ids['measures'])}",
        "result page": f"/results/{rng.choice(ids['results'])}",
        "api rollup": f"/api/v1/rollup?place={place}",
        "api works": f"/api/v1/works?place={place}",
        "export rollup.csv": "/exports/rollup.csv",
        "export places.geojson": "/exports/places.geojson",
    }[kind]
    return kind, path


def resident(base: str, ids: dict, recorder: Recorder, stop: float, seed: int) -> None:
    """Closed loop (--rate 0): one resident opening page after page with no pause, so
    the server is as busy as it can be kept; what it measures is capacity."""
    rng = random.Random(seed)
    with requests.Session() as session:
        while time.monotonic() < stop and recorder.take():
            kind, path = resident_request(rng, ids)
            timed(recorder, kind, lambda p=path: session.get(base + p, timeout=60))


def residents_at_rate(
    base: str, ids: dict, recorder: Recorder, stop: float, rate: float, clients: int, seed: int
) -> None:
    """Open loop (--rate R): visits arrive at random (a Poisson stream of R a second)
    whether or not earlier ones were answered, as residents do, and `clients` threads
    send them. A visit's time counts from its arrival, so a slow server is not hidden by
    the client sending less (coordinated omission)."""
    rng = random.Random(seed)
    local = threading.local()

    def visit(kind: str, path: str, due: float) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        timed(recorder, kind, lambda: local.session.get(base + path, timeout=60), due)

    with ThreadPoolExecutor(clients, thread_name_prefix="resident") as pool:
        due = time.monotonic()
        while recorder.take():
            due += rng.expovariate(rate)
            if due >= stop:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            pool.submit(visit, *resident_request(rng, ids), due)


class Agency:
    """One agency's writer and what the server answered it."""

    def __init__(self, agency_id: str, token: str, cells: list[tuple[str, str]]):
        self.id, self.token, self.cells = agency_id, token, cells
        self.accepted: dict[str, tuple[int, int]] = {}  # key -> (batch id, rows)
        self.refused: list[str] = []
        self.replay_mismatches: list[str] = []


def agency_writer(
    base: str,
    agency: Agency,
    recorder: Recorder,
    stop: float,
    sizes: tuple[int, int],
    every: float,
    seed: int,
) -> None:
    """POSTs a batch every `every` seconds (0: back to back) until `stop`."""
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {agency.token}"}
    run = uuid.uuid4().hex[:8]
    with requests.Session() as session:
        n = 0
        due = time.monotonic()
        while time.monotonic() < stop and recorder.take():
            time.sleep(max(0.0, due - time.monotonic()))
            due += every
            n += 1
            size = min(rng.randint(*sizes), len(agency.cells))
            day = (BATCH_DATES_END - timedelta(days=n)).isoformat()
            rows = [
                {"measure": m, "place": p, "date": day, "value": n * 1000 + i}
                for i, (m, p) in enumerate(rng.sample(agency.cells, size))
            ]
            key = f"load-{run}-{agency.id}-{n}"
            body = json.dumps({"observations": rows})
            post_headers = dict(headers, **{"Idempotency-Key": key})
            post_headers["Content-Type"] = "application/json"

            def post(b=body, h=post_headers):
                return session.post(f"{base}/api/v1/observations", data=b, headers=h, timeout=60)

            response = timed(recorder, "post observations", post)
            if response is None or response.status_code != 201:
                agency.refused.append(key)
                continue
            batch = response.json()["batch"]
            agency.accepted[key] = (batch, size)
            if n % 10 == 0 and time.monotonic() < stop and recorder.take():
                again = timed(recorder, "post observations (replay)", post)
                if again is None or again.json().get("batch") != batch:
                    agency.replay_mismatches.append(key)


def feed_runner(
    url: str, feed_id: str, every: float, stop: float, recorder: Recorder, runs: list
) -> None:
    engine = create_engine(url)
    try:
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                run = run_feed(engine, feed_id)
                ok, what = run.status in ("ok", "unchanged") and not run.rejected, run.error
                runs.append((run.id, run.status, run.rows))
            except Exception as exc:  # reported as an error of the run
                ok, what = False, repr(exc)[:200]
            recorder.record("feed run", started, ok, what or "")
            seconds = time.monotonic() - started
            time.sleep(max(0.0, min(every - seconds, stop - time.monotonic())))
    finally:
        engine.dispose()


# --- the row check ---------------------------------------------------------------------


def row_counts(engine) -> tuple[int, int]:
    """(highest batch id, observation rows plus revision rows)."""
    with engine.connect() as connection:
        top = connection.scalar(select(func.max(Batch.id))) or 0
        rows = connection.scalar(select(func.count()).select_from(Observation))
        rows += connection.scalar(select(func.count()).select_from(ObservationRevision))
    return top, rows


def check_rows(engine, before: tuple[int, int], agencies: list[Agency]) -> dict:
    """Whether every accepted batch holds exactly its rows, once, and nothing else came."""
    top, rows_before = before
    with engine.connect() as connection:
        batches = connection.execute(
            select(Batch.id, Batch.agency_id, Batch.channel, Batch.idempotency_key).where(
                Batch.id > top
            )
        ).all()
        per_batch: dict[int, int] = defaultdict(int)
        for table in (Observation, ObservationRevision):
            for batch_id, count in connection.execute(
                select(table.batch_id, func.count())
                .where(table.batch_id > top)
                .group_by(table.batch_id)
            ):
                per_batch[batch_id] += count
    _, rows_after = row_counts(engine)
    by_key = defaultdict(list)
    for batch in batches:
        if batch.idempotency_key:
            by_key[(batch.agency_id, batch.idempotency_key)].append(batch.id)
    lost, duplicated, wrong_count = [], [], []
    expected_rows = 0
    accepted_ids = set()
    for agency in agencies:
        for key, (batch_id, size) in agency.accepted.items():
            stored = by_key.get((agency.id, key), [])
            if not stored:
                lost.append(key)
            elif len(stored) > 1 or stored != [batch_id]:
                duplicated.append(key)
            if per_batch.get(batch_id, 0) != size:
                wrong_count.append((key, size, per_batch.get(batch_id, 0)))
            expected_rows += size
            accepted_ids.add(batch_id)
    feed_ids = {b.id for b in batches if b.channel == "feed"}
    unexplained = [b.id for b in batches if b.id not in accepted_ids | feed_ids]
    feed_rows = sum(per_batch.get(b, 0) for b in feed_ids)
    stray_rows = sum(n for b, n in per_batch.items() if b not in accepted_ids | feed_ids)
    appeared = rows_after - rows_before
    check = {
        "accepted batches": len(accepted_ids),
        "agency rows": expected_rows,
        "feed batches": len(feed_ids),
        "feed rows": feed_rows,
        "rows appeared": appeared,
        "lost batches": lost,
        "duplicated batches": duplicated,
        "batches with wrong row count": wrong_count,
        "unexplained batches": unexplained,
        "unexplained rows": stray_rows + (appeared - expected_rows - feed_rows - stray_rows),
        "replay mismatches": [k for a in agencies for k in a.replay_mismatches],
    }
    check["ok"] = not (
        lost
        or duplicated
        or wrong_count
        or unexplained
        or check["unexplained rows"]
        or check["replay mismatches"]
    )
    return check


# --- one run --------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def summarise(recorder: Recorder, start: float, end: float) -> list[dict]:
    """Per kind, the requests due from `start` until `end`."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    for kind, due, seconds, ok, what in recorder.records:
        if start <= due < end:
            latencies[kind].append(seconds)
            if not ok:
                errors[kind].append(what)
    table = []
    for kind in [*RESIDENT_MIX, "post observations", "post observations (replay)", "feed run"]:
        values = latencies.get(kind)
        if not values:
            continue
        table.append(
            {
                "kind": kind,
                "count": len(values),
                "per_second": round(len(values) / (end - start), 2),
                "p50_ms": round(percentile(values, 0.50) * 1000, 1),
                "p95_ms": round(percentile(values, 0.95) * 1000, 1),
                "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                "errors": len(errors[kind]),
                "error_samples": errors[kind][:5],
            }
        )
    return table


def page_lookups(base: str) -> dict[str, int]:
    """How the server answered page views over the whole run (both phases), from /metrics:
    fresh (kept, current), stale (kept, being rebuilt) or built in the request."""
    counts = {}
    for family in text_string_to_metric_families(requests.get(f"{base}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "tracker_page_cache_lookups_total":
                counts[sample.labels["result"]] = int(sample.value)
    return counts


def run_load(url: str, scratch: Path, args, load_demo: bool) -> dict:
    env = dict(os.environ)
    env.update(
        TRACKER_DATABASE_URL=url,
        TRACKER_INSTANCE_PATH=str(scratch),
        TRACKER_TREE=str(args.tree),
        TRACKER_SECURE_COOKIES="false",
        TRACKER_LOG_LEVEL="WARNING",
        TRACKER_GUNICORN_LOG_LEVEL="warning",
        PROMETHEUS_MULTIPROC_DIR=str(scratch / "metrics"),
    )
    (scratch / "metrics").mkdir(exist_ok=True)
    if load_demo:
        started = time.perf_counter()
        tracker(env, "demo")
        print(f"  demo loaded in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    engine = create_engine(url)
    try:
        feed = None
        with engine.connect() as connection:
            if args.feed:
                feed = connection.execute(
                    text("SELECT agency_id, fields, measure_id FROM feed WHERE id = :id"),
                    {"id": args.feed},
                ).first()
        source = None
        if feed is not None:
            fields = feed.fields if isinstance(feed.fields, dict) else json.loads(feed.fields)
            with engine.connect() as connection:
                places = list(
                    connection.scalars(
                        text(
                            "SELECT DISTINCT p.name FROM observation o JOIN place p "
                            "ON p.id = o.place_id WHERE o.measure_id = :m ORDER BY p.name"
                        ),
                        {"m": feed.measure_id},
                    )
                )
                match = connection.scalar(
                    text("SELECT place_match FROM feed WHERE id = :id"), {"id": args.feed}
                )
                if match == "id":
                    places = list(
                        connection.scalars(
                            text(
                                "SELECT DISTINCT place_id FROM observation WHERE measure_id = :m"
                                " ORDER BY place_id"
                            ),
                            {"m": feed.measure_id},
                        )
                    )
            source = FeedSource(fields, places, args.feed_rows)
            with engine.begin() as connection:
                connection.execute(
                    text("UPDATE feed SET url = :u, etag = NULL, last_modified = NULL "
                         "WHERE id = :id"),
                    {"u": source.url, "id": args.feed},
                )  # fmt: skip
        cells = writable_cells(engine, feed.agency_id if feed is not None else None)
        chosen = sorted(cells, key=lambda a: -len(cells[a]))[: args.agencies]
        agencies = [
            Agency(a, tracker(env, "agency", "token", a).strip().splitlines()[-1], cells[a])
            for a in chosen
        ]
        port = free_port()
        server = start_server(env, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        try:
            ids = read_ids(base, engine)
            before = row_counts(engine)
            load_before = os.getloadavg()
            recorder = Recorder(args.max_requests)
            started = time.monotonic()
            measured_from = started + args.warmup
            stop = measured_from + args.seconds
            feed_runs: list = []
            if args.rate > 0:
                threads = [
                    threading.Thread(
                        target=residents_at_rate,
                        args=(base, ids, recorder, stop, args.rate, args.residents, 0),
                    )
                ]
            else:
                threads = [
                    threading.Thread(target=resident, args=(base, ids, recorder, stop, n))
                    for n in range(args.residents)
                ]
            sizes = (args.batch_min, args.batch_max)
            threads += [
                threading.Thread(
                    target=agency_writer,
                    args=(base, a, recorder, stop, sizes, args.batch_every, 1000 + n),
                )
                for n, a in enumerate(agencies)
            ]
            if source is not None:
                threads.append(
                    threading.Thread(
                        target=feed_runner,
                        args=(url, args.feed, args.feed_every, stop, recorder, feed_runs),
                    )
                )
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            ended = time.monotonic()
            load_after = os.getloadavg()
            lookups = page_lookups(base)
        finally:
            stop_server(server)
            if source is not None:
                source.close()
        check = check_rows(engine, before, agencies)
    finally:
        engine.dispose()
    table = summarise(recorder, measured_from, ended)
    pages = [row for row in table if row["kind"] in PAGE_KINDS]
    warmup_table = summarise(recorder, started, measured_from)
    warmup = [row for row in warmup_table if row["kind"] in PAGE_KINDS]
    return {
        "seconds": round(ended - measured_from, 1),
        "warmup_seconds": args.warmup,
        "warmup_pages_p99_ms": max((row["p99_ms"] for row in warmup), default=None),
        "warmup_pages": sum(row["count"] for row in warmup),
        "warmup_kinds": warmup_table,
        "workers": args.workers,
        "rate": args.rate,
        "batch_every": args.batch_every,
        "residents": args.residents,
        "agencies": [a.id for a in agencies],
        "feed": args.feed if source is not None else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "kinds": table,
        "errors": sum(row["errors"] for row in table),
        "pages_p99_ms": max((row["p99_ms"] for row in pages), default=None),
        "targets_met": sum(row["errors"] for row in table) == 0
        and all(row["p99_ms"] < PAGE_P99_TARGET_MS for row in pages),
        "rows": check,
        "page_lookups": lookups,
    }


def markdown(backend: str, report: dict) -> str:
    residents = (
        f"residents arriving at {report['rate']}/s on {report['residents']} client threads"
        if report["rate"] > 0
        else f"{report['residents']} residents back to back"
    )
    writes = f"every {report['batch_every']} s" if report["batch_every"] > 0 else "back to back"
    lines = [
        f"### {backend}: {report['seconds']} s measured after {report['warmup_seconds']} s "
        f"of warm-up, {report['workers']} workers, {residents}, agencies "
        f"{', '.join(report['agencies'])} posting {writes}, feed {report['feed']}",
        "",
        "| kind | count | req/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["kinds"]:
        lines.append(
            f"| {row['kind']} | {row['count']} | {row['per_second']} | {row['p50_ms']} | "
            f"{row['p95_ms']} | {row['p99_ms']} | {row['errors']} |"
        )
    rows = report["rows"]
    lines += [
        "",
        f"Warm-up: {report['warmup_pages']} pages, p99 {report['warmup_pages_p99_ms']} ms. "
        f"Page views answered (both phases): {report['page_lookups']}. "
        f"Load average before {report['load_average_before']}, after "
        f"{report['load_average_after']}.",
        f"Rows: {rows['accepted batches']} batches accepted with {rows['agency rows']} rows, "
        f"{rows['feed batches']} feed runs stored {rows['feed rows']} rows; "
        f"{rows['rows appeared']} rows appeared; lost {len(rows['lost batches'])}, "
        f"duplicated {len(rows['duplicated batches'])}, wrong count "
        f"{len(rows['batches with wrong row count'])}, unexplained batches "
        f"{len(rows['unexplained batches'])}, unexplained rows {rows['unexplained rows']}, "
        f"replay mismatches {len(rows['replay mismatches'])}: "
        f"{'ok' if rows['ok'] else 'FAILED'}.",
    ]
    for row in report["kinds"]:
        for sample in row["error_samples"]:
            lines.append(f"- {row['kind']} error: {sample}")
    return "\n".join(lines)


def run_backend(backend: str, args) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="tracker-load-"))
    try:
        if args.reuse:
            return run_load(args.reuse, scratch, args, load_demo=False)
        if backend == "sqlite":
            return run_load(f"sqlite:///{scratch / 'load.sqlite3'}", scratch, args, True)
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"tracker_load_{uuid.uuid4().hex[:10]}"
        url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
            try:
                return run_load(url, scratch, args, True)
            finally:
                with admin.connect() as connection:
                    connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.dispose()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"  scratch folder kept: {scratch}", file=sys.stderr)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--warmup", type=float, default=30, help="seconds run before timing")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument(
        "--rate", type=float, default=20, help="resident visits a second (0: back to back)"
    )
    parser.add_argument(
        "--residents", type=int, default=8, help="client threads (with --rate 0: residents)"
    )
    parser.add_argument("--agencies", type=int, default=2)
    parser.add_argument(
        "--batch-every", type=float, default=10, help="seconds between an agency's batches"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-min", type=int, default=50)
    parser.add_argument("--batch-max", type=int, default=200)
    parser.add_argument("--feed", default="nzta-road-condition", help="a csv feed of the tree")
    parser.add_argument("--feed-rows", type=int, default=300)
    parser.add_argument("--feed-every", type=float, default=10)
    parser.add_argument("--tree", type=Path, default=ROOT / "results_tree.yaml")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--reuse", metavar="URL", help="a database the demo is loaded into")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    args.tree = args.tree.resolve()
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    reports = {}
    for backend in backends:
        print(f"{backend}: setting up", file=sys.stderr)
        reports[backend] = run_backend(backend, args)
        print(markdown(backend, reports[backend]) + "\n")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2))
    ok = all(r["rows"]["ok"] for r in reports.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
