"""Backing up the database to a file and restoring one (`tracker backup`, `tracker restore`).

SQLite: SQLite's online backup API copies the live file page by page while the site keeps
serving and writing (WAL), into a temporary file beside PATH that is checked
(`PRAGMA integrity_check`) and only then renamed to PATH. A restore copies a checked file
back into the live database through the same API, so open connections see either the old
database or the new one, never a mix. PostgreSQL: `pg_dump --format=custom` and
`pg_restore --clean --single-transaction`. Either way a restore refuses a file that is not
a tracker backup of a schema this code knows, refuses to replace a database that holds
data unless forced, and migrates a backup older than the code. docs/backup.md is the
operator's guide.
"""

import os
import re
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL, make_url

from tracker.db import MIGRATIONS, SQLITE_BUSY_TIMEOUT_MS, make_engine, migrate
from tracker.errors import TrackerError

# The tables whose rows a summary counts and whose rows make a database "hold data" (a
# restore over them needs --force). Places, measures and agencies are not among them:
# `tracker init` makes those from the tree file.
MAIN_TABLES = (
    ("batch", "batch", "batches"),
    ("observation", "observation", "observations"),
    ("work", "work", "works"),
    ("comment", "comment", "comments"),
    ("challenge", "challenge", "challenges"),
    ("report", "report", "reports"),
    ("user", "staff account", "staff accounts"),
)
ALWAYS_COUNTED = ("batch", "observation", "work")  # the others when there are some
SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
# SQLite backups copy this many pages (of 4 KB) per step and sleep between steps, so the
# site's writers get the lock in between; a write restarts the copy from its first page.
PAGES_PER_STEP = 1024
STEP_SLEEP = 0.005
# After this many restarts (a site that writes between every two steps) the rest is
# copied in one step: in WAL mode that holds a read snapshot, which writers do not wait for.
MAX_RESTARTS = 3
# How long pg_dump and pg_restore may wait for a table that another session holds.
LOCK_WAIT_SECONDS = 60.0
PG_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
}


@dataclass(frozen=True)
class Summary:
    """What a backup wrote or a restore replaced the database with."""

    action: str  # "backup" | "restore"
    path: Path  # the backup file
    database: str  # the configured database's URL, without its password
    size: int  # bytes of the backup file
    revision: str  # the schema revision (alembic) of the backup
    counts: dict[str, int] = field(default_factory=dict)  # rows of MAIN_TABLES
    migrated_to: str | None = None  # restore: the revision a backup older than the code got
    seconds: float = 0.0

    def line(self) -> str:
        counts = ", ".join(
            f"{self.counts[table]:,} {one if self.counts[table] == 1 else many}"
            for table, one, many in MAIN_TABLES
            if table in self.counts and (self.counts[table] or table in ALWAYS_COUNTED)
        )
        schema = f"schema {self.revision}"
        if self.migrated_to:
            schema += f", migrated to {self.migrated_to}"
        if self.action == "backup":
            return (
                f"Backup written to {self.path}: {_size(self.size)}, {counts} "
                f"({schema}, {self.seconds:.1f} s)."
            )
        return (
            f"Restored {self.path} ({_size(self.size)}) into {self.database}: {counts} "
            f"({schema}, {self.seconds:.1f} s)."
        )


def backup(
    engine_or_url: Engine | str,
    path: str | Path,
    *,
    pages: int = PAGES_PER_STEP,
    sleep: float = STEP_SLEEP,
) -> Summary:
    """Write a backup of the database to the new file `path`, complete or not at all.

    `pages`/`sleep`: the SQLite copy's step (tests make it small to force restarts).
    """
    started = time.perf_counter()
    path = Path(path)
    if path.exists():
        raise TrackerError(
            f"{path} already exists: back up to a new file (put the date in its name)."
        )
    if not path.parent.is_dir():
        raise TrackerError(f"No folder {path.parent} to write {path.name} in.")
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    with _engine(engine_or_url) as engine:
        try:
            if engine.dialect.name == "sqlite":
                revision, counts = _sqlite_backup(_sqlite_file(engine), partial, pages, sleep)
            else:
                revision, counts = _pg_backup(engine, partial)
            partial.chmod(0o600)  # residents' emails, password and token hashes
            _fsync(partial)
            os.replace(partial, path)
            _fsync(path.parent)
        finally:
            partial.unlink(missing_ok=True)
        return Summary(
            "backup",
            path,
            _shown(engine.url),
            path.stat().st_size,
            revision,
            counts,
            seconds=time.perf_counter() - started,
        )


def restore(engine_or_url: Engine | str, path: str | Path, *, force: bool = False) -> Summary:
    """Replace the database with the backup at `path`, then migrate it to this code's schema.

    Refuses (TrackerError, database untouched) a file that is not a tracker backup for this
    backend, a backup of a schema newer than the code, and — unless `force` — a database
    that already holds data.
    """
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise TrackerError(f"No backup file at {path}.")
    with _engine(engine_or_url) as engine:
        if engine.dialect.name == "sqlite":
            revision = _sqlite_restore(engine, path, force)
        else:
            revision = _pg_restore(engine, path, force)
        head = _head()
        migrated_to = None
        if revision != head:
            migrate(engine)
            migrated_to = head
        with engine.connect() as connection:
            counts = _counts(connection)
        return Summary(
            "restore",
            path,
            _shown(engine.url),
            path.stat().st_size,
            revision,
            counts,
            migrated_to,
            time.perf_counter() - started,
        )


# --- SQLite ---


def _sqlite_backup(source_path: Path, partial: Path, pages: int, sleep: float):
    if not source_path.is_file():
        raise TrackerError(f"No database at {source_path}: nothing to back up.")
    with (
        closing(_sqlite_connect(source_path)) as source,
        closing(sqlite3.connect(partial)) as copy,
    ):
        _copy_pages(source, copy, pages, sleep)
        # The copy stands alone: no -wal file beside it, readable read-only anywhere.
        copy.execute("PRAGMA journal_mode=DELETE")
        _check_integrity(copy, partial)
        revision = _sqlite_revision(copy, partial)
        counts = _counts_sqlite(copy)
    return revision, counts


def _copy_pages(source: sqlite3.Connection, copy: sqlite3.Connection, pages: int, sleep: float):
    """Copy in steps of `pages`; a site that writes between steps restarts the copy, so after
    MAX_RESTARTS the rest goes in one step (a read snapshot in WAL mode, which lets the
    writers go on)."""
    last: list[int] = []

    def progress(_status: int, remaining: int, _total: int) -> None:
        if last and remaining > last[-1]:
            last.append(-1)  # a restart: the copy went back to the first page
            if last.count(-1) > MAX_RESTARTS:
                raise _Busy
        last.append(remaining)

    try:
        source.backup(copy, pages=pages, progress=progress, sleep=sleep)
    except _Busy:
        source.backup(copy)


class _Busy(Exception):
    pass


def _sqlite_restore(engine: Engine, path: Path, force: bool) -> str:
    target = _sqlite_file(engine)
    if target.exists() and target.resolve() == path.resolve():
        raise TrackerError(f"{path} is the configured database itself.")
    revision = _check_sqlite_backup(path)
    with closing(_sqlite_connect(target)) as live:
        _refuse_data(_counts_sqlite(live), force)
        with closing(_sqlite_connect(path, read_only=True)) as source:
            try:
                source.backup(live)  # one write transaction: readers see old or new
            except sqlite3.Error as exc:
                raise TrackerError(f"Restoring {path} into {target} failed: {exc}.") from exc
    return revision


def _check_sqlite_backup(path: Path) -> str:
    """The schema revision of the SQLite tracker backup at `path`; TrackerError if it is not one."""
    header = _header(path)
    if header.startswith(PG_DUMP_MAGIC):
        raise TrackerError(
            f"{path} is a PostgreSQL backup (pg_dump) but the configured database is SQLite."
        )
    if not header.startswith(SQLITE_MAGIC):
        raise TrackerError(f"{path} is not a tracker backup: it is not an SQLite database.")
    try:
        with closing(_sqlite_connect(path, read_only=True)) as source:
            _check_integrity(source, path)
            return _sqlite_revision(source, path)
    except sqlite3.Error as exc:
        raise TrackerError(
            f"{path} is not a tracker backup: SQLite cannot read it ({exc})."
        ) from exc


def _sqlite_connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    timeout = SQLITE_BUSY_TIMEOUT_MS / 1000
    if read_only:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    return sqlite3.connect(path, timeout=timeout)


def _check_integrity(connection: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise TrackerError(f"{path} failed SQLite's integrity check: {'; '.join(problems[:5])}.")


def _sqlite_revision(connection: sqlite3.Connection, path: Path) -> str:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if "alembic_version" not in tables:
        raise TrackerError(
            f"{path} is not a tracker backup: it has no alembic_version table "
            f"({len(tables)} tables)."
        )
    return _known(
        [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")], path
    )


def _counts_sqlite(connection: sqlite3.Connection) -> dict[str, int]:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    return {
        table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        for table, _, _ in MAIN_TABLES
        if table in tables
    }


def _sqlite_file(engine: Engine) -> Path:
    name = engine.url.database
    if not name or name == ":memory:":
        raise TrackerError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(name)


# --- PostgreSQL ---


def _pg_backup(engine: Engine, partial: Path):
    pg_dump = _program("pg_dump")
    with (
        _connect(engine) as connection,
        connection.execution_options(isolation_level="REPEATABLE READ").begin(),
    ):
        # pg_dump reads the snapshot this transaction exported, so the counts below are
        # those of the file, however busy the site is.
        snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        if not inspect(connection).has_table("alembic_version"):
            raise TrackerError("The database has no tracker schema: run `tracker init` first.")
        versions = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
        revision = _known(list(versions.scalars()), "The database")
        counts = _counts(connection)
        _run(
            pg_dump,
            # A session about to change the schema (a migration) holds its tables: give up
            # rather than queue every reader of the site behind this dump.
            [
                "--format=custom",
                f"--file={partial}",
                f"--snapshot={snapshot}",
                f"--lock-wait-timeout={LOCK_WAIT_SECONDS:g}s",
            ],
            engine.url,
        )
    return revision, counts


def _pg_restore(engine: Engine, path: Path, force: bool) -> str:
    pg_restore = _program("pg_restore")
    header = _header(path)
    if header.startswith(SQLITE_MAGIC):
        raise TrackerError(f"{path} is an SQLite backup but the configured database is PostgreSQL.")
    if not header.startswith(PG_DUMP_MAGIC):
        raise TrackerError(
            f"{path} is not a tracker backup: it is not a pg_dump archive (--format=custom)."
        )
    listing = _run(pg_restore, ["--list", str(path)], None, what=f"Reading {path}")
    archived = set(re.findall(r"^\d+; \d+ \d+ TABLE (?!DATA )(\S+) (\S+) ", listing, re.M))
    if ("public", "alembic_version") not in archived:
        raise TrackerError(f"{path} is not a tracker backup: it has no alembic_version table.")
    script = _run(
        pg_restore,
        ["--data-only", "--table=alembic_version", "--file=-", str(path)],
        None,
        what=f"Reading {path}",
    )
    copied = re.search(r"^COPY public\.alembic_version .*?\n(.*?)^\\\.$", script, re.M | re.S)
    revision = _known(copied.group(1).split() if copied else [], path)

    with _connect(engine) as connection:
        _refuse_data(_counts(connection), force)
        inspector = inspect(connection)
        live = inspector.get_table_names()
        live_revision = None
        if "alembic_version" in live:
            live_revision = connection.exec_driver_sql(
                "SELECT max(version_num) FROM alembic_version"
            ).scalar()
    if live and live_revision != revision:
        # --clean drops only what the archive holds: a database of another schema revision
        # would keep its extra tables and constraints, which block those drops and then the
        # migrations. Its tables go first (one transaction), and the archive's come back.
        with engine.begin() as connection:
            for table in live:
                connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    engine.dispose()  # no pooled connection of ours waits on the tables pg_restore drops
    # A transaction left open on a table (a hung worker, a psql session) would make the
    # drops wait for ever: pg_restore's own SET lock_timeout = 0 overrides any setting, so a
    # watcher cancels it after LOCK_WAIT_SECONDS and names who held the table.
    name = f"tracker-restore-{uuid.uuid4().hex[:8]}"
    held: list[str] = []
    with _connect(engine) as watcher:
        watcher = watcher.execution_options(isolation_level="AUTOCOMMIT")
        try:
            _run(
                pg_restore,
                ["--clean", "--if-exists", "--no-owner", "--single-transaction", str(path)],
                engine.url,
                what=f"Restoring {path}",
                application_name=name,
                watch=lambda: _cancel_a_long_wait(watcher, name, held),
            )
        except TrackerError:
            if held:
                raise TrackerError(
                    f"Restoring {path} gave up after {LOCK_WAIT_SECONDS:g} s waiting for "
                    f"tables other sessions hold open ({'; '.join(held)}): nothing was "
                    "changed. End those sessions (or stop the web workers and the scheduler) "
                    "and restore again."
                ) from None
            raise
    return revision


def _cancel_a_long_wait(watcher, application_name: str, held: list[str]) -> None:
    """Cancel the session `application_name` once it has waited LOCK_WAIT_SECONDS for a
    lock, noting in `held` the sessions that hold it."""
    if held:
        return
    waiting = watcher.execute(
        text(
            "SELECT a.pid, pg_blocking_pids(a.pid) FROM pg_stat_activity a"
            " JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted"
            " WHERE a.application_name = :name"
            " AND l.waitstart < clock_timestamp() - make_interval(secs => :limit)"
        ),
        {"name": application_name, "limit": LOCK_WAIT_SECONDS},
    ).first()
    if waiting is None:
        return
    for pid, state, query in watcher.execute(
        text("SELECT pid, state, left(query, 80) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
        {"pids": list(waiting[1])},
    ):
        held.append(f"pid {pid}, {state}: {query}")
    if not held:
        held.append("a session that has just ended")
    watcher.execute(text("SELECT pg_cancel_backend(:pid)"), {"pid": waiting[0]})


def _run(
    program: str,
    args: list[str],
    url: URL | None,
    what: str | None = None,
    application_name: str | None = None,
    watch: Callable[[], None] | None = None,
) -> str:
    """Run a PostgreSQL client program (connected to `url`'s database); its output.

    The password goes in the environment (PGPASSWORD), never on the command line, where
    every user of the machine could read it.
    """
    env = dict(os.environ)
    command = [program, "--no-password"]
    if url is not None:
        host = url.host or url.query.get("host")
        for option, value in (("--host", host), ("--port", url.port), ("--username", url.username)):
            if value:
                command.append(f"{option}={value}")
        command.append(f"--dbname={url.database}")
        if url.password:
            env["PGPASSWORD"] = str(url.password)
        for key, variable in PG_ENV.items():
            if isinstance(url.query.get(key), str):
                env[variable] = url.query[key]
    if application_name:
        env["PGAPPNAME"] = application_name
    name = Path(program).name
    try:
        running = subprocess.Popen(
            command + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    except OSError as exc:
        raise TrackerError(f"Could not run {name}: {exc}.") from exc
    while True:
        try:
            out, err = running.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:  # no output is lost: communicate goes on
            if watch is not None:
                watch()
    if running.returncode != 0:
        said = " ".join(err.strip().splitlines()[-3:]) or "no message"
        raise TrackerError(f"{what or name} failed (exit {running.returncode}): {said}")
    return out


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise TrackerError(
            f"{name} is not installed (or not on PATH): install the PostgreSQL client "
            "programs of the server's version (Debian: postgresql-client)."
        )
    return found


# --- both ---


def _counts(connection) -> dict[str, int]:
    present = set(inspect(connection).get_table_names())
    return {
        table: connection.execute(text(f'SELECT count(*) FROM "{table}"')).scalar()
        for table, _, _ in MAIN_TABLES
        if table in present
    }


def _refuse_data(counts: dict[str, int], force: bool) -> None:
    if force or not any(counts.values()):
        return
    held = ", ".join(
        f"{counts[table]:,} {one if counts[table] == 1 else many}"
        for table, one, many in MAIN_TABLES
        if counts.get(table)
    )
    raise TrackerError(
        f"The database already holds data ({held}): restore with --force to replace it "
        "(back it up first)."
    )


def _known(versions: list[str], path) -> str:
    """The one revision in `versions`, if these migrations know it."""
    if len(versions) != 1:
        raise TrackerError(f"{path} is not a tracker backup: its alembic_version is {versions}.")
    try:
        ScriptDirectory.from_config(_config()).get_revision(versions[0])
    except Exception as exc:
        raise TrackerError(
            f"{path} has schema revision {versions[0]}, which this tracker does not know "
            f"(it knows up to {_head()}): restore it with the tracker version that made it, "
            "or upgrade this one."
        ) from exc
    return versions[0]


def _head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@contextmanager
def _engine(engine_or_url: Engine | str) -> Iterator[Engine]:
    if isinstance(engine_or_url, Engine):
        yield engine_or_url
        return
    engine = make_engine(engine_or_url)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _connect(engine: Engine):
    try:
        connection = engine.connect()
    except Exception as exc:  # a wrong host, database or password
        raise TrackerError(f"Cannot connect to {_shown(engine.url)}: {_first_line(exc)}") from exc
    with connection:
        yield connection


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _header(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(len(SQLITE_MAGIC))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _shown(url: URL) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _size(size: float) -> str:
    if size < 1000:
        return f"{size:.0f} bytes"
    for unit in ("KB", "MB", "GB"):  # noqa: B007 (the unit the loop stopped at)
        size /= 1000
        if size < 1000:
            break
    return f"{size:.1f} {unit}"
