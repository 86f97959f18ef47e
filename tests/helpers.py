"""Helpers shared by tests: the observation tables' references and full history."""

from sqlalchemy import select, text
from sqlmodel import Session

from tracker.models import Observation, every_revision

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
