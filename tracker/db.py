"""The database: engine, per-request session, SQLite pragmas and Alembic migrations.

With `TRACKER_READ_DATABASE_URL` set (a PostgreSQL streaming replica), `get_session`
is the one place that decides which database a request reads (`reads_replica`): an
anonymous GET of a public page or of the read API reads the replica; anything that
writes (every POST, PUT, PATCH, DELETE and every `transaction()`), anyone signed in or
sending a token, the staff and residents' own pages (PRIMARY_PATHS), the CLI and the
scheduler use the primary. A replica that cannot be reached is left alone for
REPLICA_RETRY_SECONDS and its reads go to the primary meanwhile; so do they while it is
more than TRACKER_READ_MAX_LAG_SECONDS behind (asked once every LAG_CHECK_SECONDS per
worker). See docs/operations.md.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from flask import Flask, current_app, g, has_request_context, request
from flask import session as web_session
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for SQLite's one write lock
REPLICA_CONNECT_TIMEOUT_SECONDS = 2  # a replica host that does not answer fails this fast
REPLICA_RETRY_SECONDS = 10  # after a failure, reads go to the primary this long
LAG_CHECK_SECONDS = 1.0  # how often a worker asks the replica how far behind it is
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Pages that read the primary even for an anonymous GET: staff pages and sign-in, and a
# resident's own pages reached by a mailed link (their alert, their data), which must
# show what that resident just did and may write (confirming an alert).
PRIMARY_PATHS = ("/agency", "/admin", "/login", "/logout", "/alerts", "/me")

log = logging.getLogger(__name__)


def make_engine(url: str, *, replica: bool = False) -> Engine:
    """An engine for `url`; SQLite connections get WAL, foreign keys and a busy timeout.
    A `replica` engine gives up connecting after REPLICA_CONNECT_TIMEOUT_SECONDS."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if replica:
        connect_args = {"connect_timeout": REPLICA_CONNECT_TIMEOUT_SECONDS}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
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
    """Give the app an engine (and one for the replica, when set) and close each
    request's sessions when the request ends."""
    app.extensions["engine"] = make_engine(app.config["DATABASE_URL"])
    if app.config.get("READ_DATABASE_URL"):
        app.extensions["read_engine"] = make_engine(app.config["READ_DATABASE_URL"], replica=True)
        app.extensions["replica_down_until"] = [0.0]  # time.monotonic(); a list: shared
        app.extensions["replica_lag"] = {"at": float("-inf"), "lag": None}  # the last asked
    app.teardown_appcontext(_close_session)


def get_engine() -> Engine:
    """The primary's engine."""
    return current_app.extensions["engine"]


def get_read_engine() -> Engine | None:
    """The replica's engine, or None when no TRACKER_READ_DATABASE_URL is set."""
    return current_app.extensions.get("read_engine")


def get_session() -> Session:
    """The session of the current request or app context, opened on first use: on the
    replica when `reads_replica()` and it answers, else on the primary."""
    if "db_session" not in g:
        replica = _replica_session() if reads_replica() else None
        g.db_session = replica or primary_session()
    return g.db_session


def session_engine() -> Engine:
    """The engine of this request's session, or the one it will have (without connecting:
    a replica that fails on connecting still makes it the primary's)."""
    if "db_session" in g:
        return g.db_session.get_bind()
    if reads_replica() and replica_serving():
        return get_read_engine()
    return get_engine()


def primary_session() -> Session:
    """The session on the primary of the current request or app context (every write)."""
    if "db_primary" not in g:
        g.db_primary = Session(get_engine(), expire_on_commit=False)
    return g.db_primary


def reads_replica() -> bool:
    """Whether this request may read the replica: one is set, and the request is an
    anonymous GET (no signed-in account, no token, no pending flash: nothing that must
    see its own writes) outside PRIMARY_PATHS. Outside a request (CLI, jobs): never."""
    if get_read_engine() is None or not has_request_context():
        return False
    if request.method not in SAFE_METHODS or "Authorization" in request.headers:
        return False
    if web_session.get("uid") or web_session.get("_flashes"):
        return False
    path = request.path
    return not any(path == prefix or path.startswith(prefix + "/") for prefix in PRIMARY_PATHS)


def _replica_session() -> Session | None:
    """A session on the replica, already connected; None (read the primary) when the
    replica failed within REPLICA_RETRY_SECONDS or fails now."""
    down_until = current_app.extensions["replica_down_until"]
    if time.monotonic() < down_until[0]:
        return None
    session = Session(get_read_engine(), expire_on_commit=False)
    try:
        connection = session.connection()  # fail here, before the page has read half its data
        memo = current_app.extensions["replica_lag"]
        if _max_lag() and time.monotonic() - memo["at"] > LAG_CHECK_SECONDS:
            memo.update(lag=_lag(connection), at=time.monotonic())
    except DBAPIError as exc:
        session.close()
        replica_failed(exc)
        return None
    if _too_far_behind():
        session.close()
        return None
    return session


def _max_lag() -> float:
    return current_app.config.get("READ_MAX_LAG_SECONDS") or 0.0


def _too_far_behind() -> bool:
    """Whether the replica's lag, as last asked, is over TRACKER_READ_MAX_LAG_SECONDS."""
    lag = current_app.extensions["replica_lag"]["lag"]
    return bool(_max_lag()) and lag is not None and lag > _max_lag()


def replica_failed(exc: BaseException) -> None:
    """Send this worker's reads to the primary for the next REPLICA_RETRY_SECONDS."""
    current_app.extensions["replica_down_until"][0] = time.monotonic() + REPLICA_RETRY_SECONDS
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    log.warning("replica unavailable, reading the primary for %s s: %s",
                REPLICA_RETRY_SECONDS, first)  # fmt: skip


def replica_serving() -> bool:
    """Whether this worker currently sends reads to the replica (not after a failure, nor
    while it was last found too far behind)."""
    down = time.monotonic() < current_app.extensions["replica_down_until"][0]
    return not down and not _too_far_behind()


def replica_lag_seen(lag: float | None) -> None:
    """Keep a lag just measured (by /readyz) as this worker's latest."""
    current_app.extensions["replica_lag"].update(lag=lag, at=time.monotonic())


# Seconds the replica is behind: 0 when it has replayed all it received (on an idle
# primary the last replayed commit is old but nothing is missing) or is not a replica.
_REPLICA_LAG = text(
    "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
    " WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)


def replica_lag(engine: Engine) -> float | None:
    """How far `engine`'s server is behind its primary, in seconds (None: unknown, as
    before its first replayed commit; SQLite: always 0). Raises when it cannot be reached."""
    with engine.connect() as connection:
        return _lag(connection)


def _lag(connection: Connection) -> float | None:
    if connection.dialect.name != "postgresql":
        connection.execute(text("SELECT 1"))
        return 0.0
    lag = connection.execute(_REPLICA_LAG).scalar()
    return None if lag is None else max(0.0, float(lag))


def _close_session(_exc: BaseException | None) -> None:
    """Close the request's sessions, tolerating a dead link.

    A server restart terminates the sessions under way: a request that had already made
    its answer (a page read in full) then fails only on the ROLLBACK that ends its
    session, which has nothing to undo. Raised here, that would turn the good answer into
    a bare 500; it is logged instead and the session's connections discarded.
    """
    for key in ("db_session", "db_primary"):
        session = g.pop(key, None)
        if session is None:
            continue
        try:
            session.close()
        except DBAPIError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            log.warning("database session closed on a dead link: %s", first)
            session.invalidate()


@contextmanager
def transaction() -> Iterator[Session]:
    """The request's primary session for one write: committed when the block ends, rolled
    back when it raises (the error goes on to the one handler). Views write only through
    this; in a POST it is the very session `get_session()` gave."""
    session = primary_session()
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
