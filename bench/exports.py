"""Exports benchmark: the size of each file under /exports/ on the demo city, the time to
produce it, and the Python memory it needed.

    .venv/bin/python bench/exports.py                       # SQLite, demo in a temp folder
    .venv/bin/python bench/exports.py --instance /tmp/inst  # reuse (or make) a demo there
    .venv/bin/python bench/exports.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres

The demo city is loaded with `tracker demo` (a throwaway database on --postgres, dropped
after). Each file is read through the app (Flask's test client, streamed chunk by chunk,
so no network) three times: timed cold (a new app: empty roll-up cache), timed again
warm, and once under tracemalloc for the peak of Python memory while streaming (that
pass is slower and not timed). rollup.csv is asked for one fixed day. Sizes are bytes as
sent and gzip-compressed (level 6; browsers get Brotli from the app, a little smaller).

`--validate DIR` also saves every file in DIR and validates the whole data package there
with `frictionless` (the dev extra), as a user would.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
import zlib
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker import create_app  # noqa: E402
from tracker.settings import Settings  # noqa: E402

DAY = "2026-09-30"
FILES = (
    "observations.csv",
    "revisions.csv",
    f"rollup.csv?date={DAY}",
    "places.geojson",
    "works.geojson",
    "datapackage.json",
)


def load_demo(instance: Path, database_url: str | None) -> None:
    env = dict(
        os.environ,
        TRACKER_INSTANCE_PATH=str(instance),
        TRACKER_TREE=str(ROOT / "results_tree.yaml"),
    )
    if database_url:
        env["TRACKER_DATABASE_URL"] = database_url
    subprocess.run([str(Path(sys.executable).parent / "tracker"), "demo"], env=env, check=True)


def read(app, name: str, *, trace: bool = False) -> dict:
    """Stream one export through the app: bytes, gzip bytes, lines, seconds, peak memory."""
    client = app.test_client()
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    size = packed = lines = 0
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    response = client.get(f"/exports/{name}", buffered=False)
    assert response.status_code == 200, (name, response.status_code)
    for chunk in response.response:
        data = chunk if isinstance(chunk, bytes) else chunk.encode()
        size += len(data)
        lines += data.count(b"\n")
        packed += len(packer.compress(data))
    response.close()
    packed += len(packer.flush())
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    return {"bytes": size, "gzip": packed, "lines": lines, "seconds": seconds, "peak": peak}


def validate(settings: Settings, folder: Path) -> None:
    """Save every export in `folder` and validate the data package with frictionless."""
    import frictionless

    folder.mkdir(parents=True, exist_ok=True)
    client = create_app(settings).test_client()
    for name in FILES:
        path = folder / name.partition("?")[0]
        path.write_bytes(client.get(f"/exports/{name}").get_data())
    started = time.perf_counter()
    report = frictionless.validate(folder / "datapackage.json")
    seconds = time.perf_counter() - started
    rows = sum(task.stats.get("rows") or 0 for task in report.tasks)
    errors = sum(len(task.errors) for task in report.tasks)
    print(
        f"frictionless: valid={report.valid}, {len(report.tasks)} resources, {rows:,} rows "
        f"checked, {errors} errors, {seconds:.1f} s"
    )
    for task in report.tasks:
        for error in task.errors[:5]:
            print(f"  {task.name}: {error.message}")


def run(settings: Settings) -> None:
    print(
        f"{'file':<28}{'lines':>9}{'size':>11}{'gzip':>10}{'cold s':>8}{'warm s':>8}{'peak MB':>9}"
    )
    for name in FILES:
        cold = read(create_app(settings), name)
        app = create_app(settings)
        read(app, name)
        warm = read(app, name)
        peak = read(create_app(settings), name, trace=True)["peak"]
        size, packed = cold["bytes"] / 1e6, cold["gzip"] / 1e6
        print(
            f"{name:<28}{cold['lines']:>9,}{size:>9.2f}MB{packed:>8.2f}MB"
            f"{cold['seconds']:>8.2f}{warm['seconds']:>8.2f}{peak / 1e6:>9.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instance", type=Path, help="instance folder (demo made if absent)")
    parser.add_argument("--postgres", help="a PostgreSQL server URL: run on a throwaway database")
    parser.add_argument("--validate", type=Path, metavar="DIR", help="save and validate here")
    args = parser.parse_args()
    instance = args.instance or Path(tempfile.mkdtemp(prefix="bench-exports-"))
    instance.mkdir(parents=True, exist_ok=True)
    database_url = None
    admin = None
    if args.postgres:
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"bench_exports_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = make_url(args.postgres).set(database=name).render_as_string(False)
    try:
        if database_url or not (instance / "tracker.sqlite3").exists():
            load_demo(instance, database_url)
        settings = Settings(
            instance_path=instance,
            tree=ROOT / "results_tree.yaml",
            database_url=database_url,
            secret_key="bench",
            _env_file=None,
        )
        run(settings)
        if args.validate:
            validate(settings, args.validate)
    finally:
        if admin is not None:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
