"""Helpers shared by tests: where the test PostgreSQL server and the tiny city are, the
observation tables' references and full history.

Import these from here, not from `conftest`: pytest loads both tests/conftest.py and
tests/browser/conftest.py under the one name `conftest`, so `from conftest import X` in a
test module gets whichever loaded last (under xdist, often the browser one).
"""

import os
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from tracker.models import Observation, every_revision

PG_SERVER = os.environ.get(
    "TRACKER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
FIXTURES = Path(__file__).parent / "fixtures"
TINY_TREE = FIXTURES / "tiny_city" / "tree.yaml"


# Truncates only the tables holding rows: TRUNCATE's cost is per table (each gets a new
# file and its buffers are dropped), and most tests fill a third of them. Every sequence
# starts again at 1, as after `TRUNCATE … RESTART IDENTITY`, rolled-back inserts included.
_EMPTY_POSTGRES = text(
    """
DO $$
DECLARE
  name text;
  holds_rows boolean;
  full_tables text[] := '{}';
BEGIN
  FOR name IN SELECT tablename FROM pg_tables
              WHERE schemaname = current_schema() AND tablename <> 'alembic_version' LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', name) INTO holds_rows;
    IF holds_rows THEN full_tables := full_tables || name; END IF;
  END LOOP;
  IF cardinality(full_tables) > 0 THEN
    EXECUTE 'TRUNCATE ' || (SELECT string_agg(format('%I', t), ', ') FROM unnest(full_tables) t)
      || ' CASCADE';
  END IF;
  PERFORM setval(c.oid, 1, false) FROM pg_class c
   WHERE c.relkind = 'S' AND c.relnamespace = current_schema()::regnamespace;
END $$
"""
)


def empty_postgres(url: str) -> None:
    """Delete every row of every table but alembic_version (a test's fresh start)."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(_EMPTY_POSTGRES)
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
