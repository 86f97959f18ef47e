"""Feed-run benchmark: rows per second, on SQLite and PostgreSQL, from a local HTTP server.

    .venv/bin/python bench/feeds.py                     # both backends
    .venv/bin/python bench/feeds.py --backend sqlite    # one

Two feeds over the tests' tiny city (tests/fixtures/tiny_city), each served by
http.server on 127.0.0.1 and read through `run_feed`, the path `tracker import` takes:

- csv: 100,000 observation rows in one CSV answer (3 places × 33,334 days of one
  measure): a first run that stores them all, then a re-run of the same body (no ETag:
  every row is read, checked and found unchanged);
- arcgis: 10 pages of 1,000 Esri JSON records (attributes only, epoch-millisecond
  dates): 10 requests, 10,000 rows.

PostgreSQL: a throwaway database is created on --postgres and dropped afterwards.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker.cli import initialise  # noqa: E402
from tracker.feeds import run_feed  # noqa: E402
from tracker.models import Feed  # noqa: E402
from tracker.settings import Settings  # noqa: E402

PLACES = ("opawa", "st-albans", "riccarton")
CSV_ROWS = 100_000
PAGES, PAGE_SIZE = 10, 1000


def csv_body(rows: int) -> bytes:
    """`rows` observations of homes-repaired, one a day per place, ending yesterday."""
    days = -(-rows // len(PLACES))
    end = date.today() - timedelta(days=1)
    lines = ["place,date,value"]
    for n in range(rows):
        day = end - timedelta(days=n // len(PLACES))
        lines.append(f"{PLACES[n % len(PLACES)]},{day},{days - n // len(PLACES)}")
    return ("\n".join(lines) + "\n").encode()


def esri_page(offset: int) -> bytes:
    """One page of an ArcGIS table layer: place, epoch-ms date, value."""
    end = datetime.now(UTC) - timedelta(days=1)
    features = [
        {
            "attributes": {
                "Suburb": PLACES[n % len(PLACES)],
                "AsAt": int((end - timedelta(days=n // len(PLACES))).timestamp() * 1000),
                "Count": n,
            }
        }
        for n in range(offset, offset + PAGE_SIZE)
    ]
    fields = [
        {"name": "Suburb", "type": "esriFieldTypeString"},
        {"name": "AsAt", "type": "esriFieldTypeDate"},
        {"name": "Count", "type": "esriFieldTypeInteger"},
    ]
    answer = {"fields": fields, "features": features}
    if offset + PAGE_SIZE < PAGES * PAGE_SIZE:
        answer["exceededTransferLimit"] = True
    return json.dumps(answer).encode()


def serve() -> ThreadingHTTPServer:
    """The two sources on a free local port."""
    body = csv_body(CSV_ROWS)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/repairs.csv":
                answer = body
            else:
                answer = esri_page(int(dict(parse_qsl(parts.query))["resultOffset"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def timed(engine, feed_id: str) -> tuple[float, int]:
    """Seconds and rows stored of one run; it must succeed."""
    started = time.perf_counter()
    run = run_feed(engine, feed_id)
    seconds = time.perf_counter() - started
    assert run.status == "ok" and run.rejected == 0, (run.status, run.error, run.rejected)
    return seconds, run.rows


def bench(url: str, port: int) -> list[tuple[str, float, int]]:
    """The three timed runs on the database at `url`."""
    settings = Settings(
        database_url=url,
        tree=ROOT / "tests" / "fixtures" / "tiny_city" / "tree.yaml",
        _env_file=None,
    )
    engine, _tree = initialise(settings)
    common = {"agency_id": "eqc", "every": "1h", "measure_id": "homes-repaired", "timeout": 120}
    with Session(engine) as session:
        session.add(Feed(id="csv", url=f"http://127.0.0.1:{port}/repairs.csv", format="csv",
                         **common))  # fmt: skip
        session.add(
            Feed(
                id="arcgis",
                url=f"http://127.0.0.1:{port}/layer/0",
                format="arcgis",
                fields={"place": "Suburb", "date": "AsAt", "value": "Count"},
                **common,
            )
        )
        session.commit()
    try:
        results = [("csv, first run (100k new rows)", *timed(engine, "csv"))]
        results.append(("csv, same rows again (all unchanged)", *timed(engine, "csv")))
        results.append(("arcgis, 10 pages of 1,000", *timed(engine, "arcgis")))
    finally:
        engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    server = serve()
    port = server.server_port
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                results = bench(f"sqlite:///{folder}/bench.sqlite3", port)
        else:
            admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(args.postgres).set(database=name)
                results = bench(url.render_as_string(hide_password=False), port)
            finally:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                admin.dispose()
        for label, seconds, rows in results:
            print(f"{backend:10} {label:40} {rows:>7} rows {seconds:6.2f} s "
                  f"{rows / seconds:>9,.0f} rows/s")  # fmt: skip
    server.shutdown()


if __name__ == "__main__":
    main()
