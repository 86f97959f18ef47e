"""Helpers shared by tests: where the test PostgreSQL server and the tiny city are, the
observation tables' references and full history.

Import these from here, not from `conftest`: pytest loads both tests/conftest.py and
tests/browser/conftest.py under the one name `conftest`, so `from conftest import X` in a
test module gets whichever loaded last (under xdist, often the browser one).
"""

import os
from pathlib import Path

from sqlalchemy import create_engine, inspect, select, text
from sqlmodel import Session

from tracker.models import Observation, every_revision

PG_SERVER = os.environ.get(
    "TRACKER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIXTURES = Path(__file__).parent / "fixtures"
TINY_TREE = FIXTURES / "tiny_city" / "tree.yaml"


def empty_postgres(url: str) -> None:
    """Delete every row of every table but alembic_version (a test's fresh start)."""
    engine = create_engine(url)
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.begin() as connection:
        connection.execute(
            text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        )
    engine.dispose()


# The observation tables have no foreign keys (migration 0004): the write path keeps their
# references, and every test on a loaded city checks it did.
REFERENCES = (
    ("observation", "measure_id", "node"),
    ("observation", "place_id", "place"),
    ("observation", "batch_id", "batch"),
    ("observationrevision", "observation_id", "observation"),
    ("observationrevision", "batch_id", "batch"),
)


def orphans(engine) -> list[str]:
    """`table.column` of every reference above that names a missing row."""
    found = []
    with engine.connect() as connection:
        for table, column, target in REFERENCES:
            missing = connection.execute(
                text(
                    f"SELECT count(*) FROM {table} t LEFT JOIN {target} r ON r.id = t.{column}"
                    " WHERE r.id IS NULL"
                )
            ).scalar()
            if missing:
                found.append(f"{table}.{column}: {missing}")
    return found


def revision_history(engine) -> dict[tuple, list[tuple[int, float | None]]]:
    """Every value sent for each (measure, place, date, dims_key), as (revision, value)."""
    revisions = every_revision()
    history: dict[tuple, list[tuple[int, float | None]]] = {}
    with Session(engine) as session:
        for measure, place, day, key, revision, value in session.execute(
            select(
                Observation.measure_id,
                Observation.place_id,
                Observation.date,
                Observation.dims_key,
                revisions.c.revision,
                revisions.c.value,
            )
            .join(Observation, Observation.id == revisions.c.observation_id)
            .order_by(Observation.id, revisions.c.revision)
        ):
            history.setdefault((measure, place, day.isoformat(), key), []).append((revision, value))
    return history
