"""The database: engine, per-request session, SQLite pragmas and Alembic migrations."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g
from sqlalchemy import Connection, Engine, create_engine, event
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for SQLite's one write lock


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite connections get WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers run beside one writer; the busy timeout makes a second writer wait
    # instead of failing with "database is locked"; foreign keys are off unless asked for.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision`; safe to run again and again."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        if connection.dialect.name == "sqlite":
            _seed_planner_statistics(connection)


# What SQLite's planner should assume about the big tables until a real ANALYZE runs:
# (table, index, "rows  rows-per-first-column  rows-per-first-two-columns …").
# Without statistics it read a measure's whole history through a (measure_id, date)
# index instead of seeking each series in uq_observation, which made a cold city roll-up
# of the demo 4 times slower (650 ms against 150 ms); that index is gone (migration
# 0005), and these still tell the planner how selective the remaining ones are. The
# shape, not the numbers, matters: many rows per measure, one per (measure, place,
# dims_key, date).
SQLITE_STATISTICS = (
    ("observation", "sqlite_autoindex_observation_1", "1000000 10000 100 50 1"),
    ("observation", "ix_observation_batch_id", "1000000 1000"),
    ("observationrevision", "ix_observationrevision_observation_id", "1000000 1"),
    ("measureplace", "sqlite_autoindex_measureplace_1", "2000 100 1"),
    ("measureplace", "ix_measureplace_place_id", "2000 20"),
)


def _seed_planner_statistics(connection: Connection) -> None:
    """Give SQLite's planner the tables' shape (SQLITE_STATISTICS) unless it has real ones.

    SQLite documents sqlite_stat1 as writable for exactly this; a later ANALYZE replaces
    these rows with measured ones.
    """
    connection.exec_driver_sql("ANALYZE sqlite_schema")  # creates sqlite_stat1 if missing
    known = connection.exec_driver_sql(
        "SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'observation'"
    ).scalar()
    if known:
        return
    connection.exec_driver_sql(
        "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", list(SQLITE_STATISTICS)
    )
    connection.exec_driver_sql("ANALYZE sqlite_schema")  # load them into this connection


def init_app(app: Flask) -> None:
    """Give the app an engine and close each request's session when the request ends."""
    app.extensions["engine"] = make_engine(app.config["DATABASE_URL"])
    app.teardown_appcontext(_close_session)


def get_engine() -> Engine:
    return current_app.extensions["engine"]


def get_session() -> Session:
    """The session of the current request or app context, opened on first use."""
    if "db_session" not in g:
        g.db_session = Session(get_engine(), expire_on_commit=False)
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


@contextmanager
def transaction() -> Iterator[Session]:
    """The request's session for one write: committed when the block ends, rolled back
    when it raises (the error goes on to the one handler). Views write only through this."""
    session = get_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on error (CLI, jobs)."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
