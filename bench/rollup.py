"""Roll-up benchmark: a synthetic city, timed on SQLite and PostgreSQL.

    .venv/bin/python bench/rollup.py                      # full size, both backends
    .venv/bin/python bench/rollup.py --years 1 --backend sqlite   # quick

Full size is 100 neighbourhoods (10 areas), 60 measures and weekly values for 10 years:
about 3.1 million observations. They are bulk-loaded straight into the observation table
(one Batch per agency; each value sent once, so no replaced values in
observationrevision). The figures:

- raw: one hand-written SQL query for the latest value on or before the day for every
  measure × neighbourhood (the floor any roll-up must pay);
- cold: the full city roll-up with an empty cache (target ≤ 3 × raw);
- warm: the same roll-up again, through `rollup()` and through GET /api/v1/rollup
  (target ≤ 20 ms);
- after write: 1,000 rows for 10 measures through `submit_observations`, then the roll-up
  again; median and worst of --cycles (10) such cycles, the first adding rows, the others
  revising them (target ≤ 200 ms; the submission's own time is shown apart).

PostgreSQL: a throwaway database is created on --postgres and dropped afterwards.
"""

import argparse
import gc
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracker import create_app
from tracker.cli import initialise
from tracker.models import Batch
from tracker.rollup import RollupCache, load_definitions, rollup
from tracker.settings import Settings
from tracker.submissions import submit_observations

KINDS = [("cumulative", "sum"), ("level", "mean"), ("flow", "sum")]
AGENCIES = 6


def write_city(folder: Path, neighbourhoods: int, measures: int, start: date, due: date) -> Path:
    """A boundaries file and a results tree for the synthetic city; returns the tree."""
    side = math.ceil(math.sqrt(neighbourhoods))
    features = []
    for n in range(neighbourhoods):
        x, y = 172.5 + (n % side) * 0.01, -43.6 + (n // side) * 0.01
        ring = [[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]
        features.append(
            {
                "type": "Feature",
                "properties": {"id": f"n{n:03d}", "name": f"Suburb {n}", "ward": f"Ward {n % 10}"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    (folder / "places.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )
    places = [f"n{n:03d}" for n in range(neighbourhoods)]
    outputs = []
    for a in range(AGENCIES):
        items = []
        for m in range(a, measures, AGENCIES):
            kind, how = KINDS[m % len(KINDS)]
            target: object = {p: 1000 for p in places} if kind == "cumulative" else 80
            if kind == "flow":
                target = 5000 * neighbourhoods
            items.append(
                {
                    "id": f"m{m:02d}",
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
        outputs.append(
            {"id": f"o{a}", "agency": f"a{a}", "title": f"Output {a}", "measures": items}
        )
    tree = {
        "version": 1,
        "city": {"id": "synth", "name": "Synthetic City"},
        "places": {
            "boundaries": "places.geojson",
            "id_property": "id",
            "name_property": "name",
            "area_property": "ward",
        },
        "agencies": [{"id": f"a{a}", "name": f"Agency {a}"} for a in range(AGENCIES)],
        "results": [
            {"id": f"r{r}", "title": f"Result {r}", "outputs": outputs[r::3]} for r in range(3)
        ],
    }
    path = folder / "tree.yaml"
    path.write_text(json.dumps(tree))  # JSON is YAML
    return path


def make_batches(session: Session) -> list[int]:
    """One Batch per agency for the synthetic observations; their ids."""
    batches = [Batch(agency_id=f"a{a}", channel="api") for a in range(AGENCIES)]
    session.add_all(batches)
    session.flush()
    return [batch.id for batch in batches]


def observation_rows(batches: list[int], start: date, weeks: int, places: int, measures: int):
    """Every synthetic observation as a tuple: weekly values, cumulative ones rising."""
    now = datetime.now(UTC)
    rng = random.Random(3)
    for m in range(measures):
        kind = KINDS[m % len(KINDS)][0]
        batch = batches[m % AGENCIES]
        for n in range(places):
            level = 0.0
            for w in range(weeks):
                step = rng.random() * 4
                level = level + step if kind == "cumulative" else step * 20
                day = start + timedelta(days=7 * w)
                yield (f"m{m:02d}", f"n{n:03d}", day, "", round(level, 2), 1, batch, now, now, None)


COLUMNS = (
    "measure_id, place_id, date, dims_key, value, revisions, batch_id, received_at,"
    " first_received_at, note"
)


def bulk_load(session: Session, rows) -> int:
    """Insert observation tuples as fast as the backend allows (COPY on PostgreSQL)."""
    connection = session.connection().connection.driver_connection
    count = 0
    if session.get_bind().dialect.name == "postgresql":
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY observation ({COLUMNS}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                count += 1
    else:
        cursor = connection.cursor()
        chunk: list[tuple] = []
        for row in rows:
            day, received = row[2].isoformat(), row[7].strftime("%Y-%m-%d %H:%M:%S.%f")
            chunk.append((*row[:2], day, *row[3:7], received, received, row[9]))
            if len(chunk) == 100_000:
                count += _insert(cursor, chunk)
                chunk = []
        count += _insert(cursor, chunk)
    return count


def _insert(cursor, chunk: list[tuple]) -> int:
    cursor.executemany(f"INSERT INTO observation ({COLUMNS}) VALUES ({', '.join('?' * 10)})", chunk)
    return len(chunk)


RAW_LATEST = """
SELECT measure_id, place_id, value FROM (
  SELECT measure_id, place_id, value,
         ROW_NUMBER() OVER (PARTITION BY measure_id, place_id, dims_key ORDER BY date DESC) AS rn
  FROM observation WHERE date <= :day AND value IS NOT NULL
) latest WHERE rn = 1
"""


def timed(action: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median milliseconds over `repeat` runs, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def run(backend: str, url: str, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Build the city on one database and time the roll-up; figures in milliseconds."""
    weeks = args.years * 52
    today = date.today()
    start = today - timedelta(days=7 * (weeks + 1))
    tree_path = write_city(folder, args.neighbourhoods, args.measures, start, today)
    settings = Settings(
        database_url=url, tree=tree_path, instance_path=folder, secret_key="bench", _env_file=None
    )
    engine, _ = initialise(settings)
    figures: dict[str, float] = {}
    with Session(engine, expire_on_commit=False) as session:
        started = time.perf_counter()
        batches = make_batches(session)
        rows = observation_rows(batches, start, weeks, args.neighbourhoods, args.measures)
        figures["observations"] = bulk_load(session, rows)
        session.commit()
        figures["load_s"] = time.perf_counter() - started
        session.execute(text("ANALYZE"))
        session.commit()
        day = load_definitions(session).today()
        city = load_definitions(session).city_id

        session.execute(text(RAW_LATEST), {"day": day}).all()  # warm the page cache once
        figures["raw_ms"], found = timed(
            lambda: session.execute(text(RAW_LATEST), {"day": day}).all(), args.repeat
        )
        figures["raw_rows"] = len(found)
        figures["cold_ms"], _ = timed(
            lambda: rollup(session, place_id=city, on=day, cache=RollupCache()), args.repeat
        )
        cache = RollupCache()
        rollup(session, place_id=city, on=day, cache=cache)
        figures["warm_ms"], _ = timed(
            lambda: rollup(session, place_id=city, on=day, cache=cache), 50
        )

        # 1,000 rows for 10 measures: new values first, then revisions of them. Start-up
        # objects frozen first, as a web worker does (tracker.create_worker_app).
        gc.freeze()
        submit_times, after_times = [], []
        for cycle in range(args.cycles):
            new_rows = [
                {
                    "measure": f"m{m:02d}",
                    "place": f"n{n:03d}",
                    "date": day.isoformat(),
                    "value": cycle,
                }
                for m in range(0, 10 * AGENCIES, AGENCIES)
                for n in range(min(100, args.neighbourhoods))
            ][:1000]
            started = time.perf_counter()
            submit_observations(session, agency_id="a0", rows=new_rows, channel="api")
            session.commit()
            submit_times.append((time.perf_counter() - started) * 1000)
            after, _ = timed(lambda: rollup(session, place_id=city, on=day, cache=cache), 1)
            after_times.append(after)
        figures["submitted_rows"] = len(new_rows)
        figures["submit_ms"] = statistics.median(submit_times)
        figures["after_write_ms"] = statistics.median(after_times)
        figures["after_write_max_ms"] = max(after_times)

    app = create_app(settings)
    client = app.test_client()
    address = f"/api/v1/rollup?place={city}&date={day.isoformat()}"
    client.get(address)
    figures["warm_http_ms"], answer = timed(lambda: client.get(address), 50)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    app.extensions["engine"].dispose()
    engine.dispose()
    figures["cold_over_raw"] = figures["cold_ms"] / figures["raw_ms"]
    return figures


def postgres_database(server: str) -> tuple[str, Callable[[], None]]:
    """A new empty database on `server`, and a function that drops it."""
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"tracker_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--neighbourhoods", type=int, default=100)
    parser.add_argument("--measures", type=int, default=60)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cold/raw figure")
    parser.add_argument("--cycles", type=int, default=10, help="write + roll-up cycles")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        with tempfile.TemporaryDirectory() as folder:
            if backend == "sqlite":
                url, drop = f"sqlite:///{folder}/bench.sqlite3", (lambda: None)
            else:
                url, drop = postgres_database(args.postgres)
            try:
                figures = run(backend, url, args, Path(folder))
            finally:
                drop()
        print(f"\n{backend}")
        for name, value in figures.items():
            print(
                f"  {name:16} {value:,.2f}"
                if isinstance(value, float)
                else f"  {name:16} {value:,}"
            )


if __name__ == "__main__":
    main()
