"""Works benchmark: one large works batch, its re-send, and reading the works back in pages.

    .venv/bin/python bench/works.py                          # both backends, 40,000 works
    .venv/bin/python bench/works.py --backend sqlite --works 4000

The tiny test city (tests/fixtures/tiny_city) and one batch of N planned point works in
one neighbourhood, posted as one JSON body through the app (Flask's test client, so the
figures are the write path's own, without a network): the first POST creates every
work; the second sends the same body (every work unchanged); then every page of
`GET /api/v1/works?place=CITY` is read, and of `?street=` for the street the works lie
on. Then `tracker init` runs again twice: with the same files, and with Ōpāwa Road moved
10 m north, which measures every work near it against the streets again (they stay on
it). Times are wall-clock seconds of one run each.

PostgreSQL: a throwaway database is created on --postgres and dropped after.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker import create_app  # noqa: E402
from tracker.auth import issue_token  # noqa: E402
from tracker.cli import initialise  # noqa: E402
from tracker.settings import Settings  # noqa: E402

CITY = ROOT / "tests" / "fixtures" / "tiny_city"


def works(count: int) -> list[dict]:
    """`count` planned point works in Ōpāwa, along Ōpāwa Road."""
    return [
        {
            "id": f"w{i:06d}",
            "title": "Road patch",
            "status": "planned",
            "geometry": {"type": "Point", "coordinates": [172.602 + (i % 50) * 0.0001, -43.535]},
        }
        for i in range(count)
    ]


def pages(client, url: str) -> tuple[int, int, float]:
    """Follow `next` from `url`: (pages, works, seconds)."""
    started, count, read = time.perf_counter(), 0, 0
    while url:
        page = client.get(url).get_json()
        count, read, url = count + 1, read + len(page["features"]), page["next"]
    return count, read, time.perf_counter() - started


def run(database_url: str, count: int) -> dict[str, object]:
    """The figures of one backend."""
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(CITY, Path(folder) / "city")  # a copy: its streets file is edited
        settings = Settings(
            database_url=database_url,
            tree=Path(folder) / "city" / "tree.yaml",
            instance_path=Path(folder),
            secret_key="bench",
            _env_file=None,
        )
        engine, _ = initialise(settings)
        with Session(engine) as session:
            token = issue_token(session, "eqc")
            session.commit()
        engine.dispose()
        app = create_app(settings)
        client = app.test_client()
        body = json.dumps({"works": works(count)})
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        figures: dict[str, object] = {"works": count, "body MB": round(len(body) / 1e6, 1)}
        for label in ("first POST s", "same again s"):
            started = time.perf_counter()
            answer = client.post("/api/v1/works", data=body, headers=headers)
            assert answer.status_code == 201, answer.get_data(as_text=True)[:300]
            figures[label] = round(time.perf_counter() - started, 2)
        for label, url in (
            ("city pages", "/api/v1/works?place=tiny"),
            ("street pages", "/api/v1/works?street=opawa-road"),
        ):
            number, read, seconds = pages(client, url)
            assert read == count, (label, read)
            figures[label] = f"{number} in {seconds:.2f} s"
        for label in ("init, same files s", "init, street moved s"):
            if label.endswith("moved s"):
                move_opawa_road(settings.tree.parent / "streets.geojson", metres=10)
            started = time.perf_counter()
            initialise(settings)[0].dispose()
            figures[label] = round(time.perf_counter() - started, 2)
        _, read, _ = pages(client, "/api/v1/works?street=opawa-road")
        assert read == count, ("street pages after the move", read)
        app.extensions["engine"].dispose()
        return figures


def move_opawa_road(path: Path, metres: float) -> None:
    """Move Ōpāwa Road's segments `metres` north in the streets file at `path`."""
    gazetteer = json.loads(path.read_text(encoding="utf-8"))
    for feature in gazetteer["features"]:
        if feature["properties"]["name"] == "ŌPĀWA ROAD":
            coordinates = feature["geometry"]["coordinates"]
            feature["geometry"]["coordinates"] = [[x, y + metres / 111_000] for x, y in coordinates]
    path.write_text(json.dumps(gazetteer), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--works", type=int, default=40_000)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                print("sqlite", run(f"sqlite:///{folder}/bench.sqlite3", args.works))
            continue
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(args.postgres).set(database=name).render_as_string(False)
            print("postgresql", run(url, args.works))
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
