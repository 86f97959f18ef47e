"""`tracker backup PATH` and `tracker restore PATH` (tracker/backup.py), on both backends:
a round trip keeps every row of every table, a backup taken while batches arrive is
consistent, and a restore refuses what it must refuse, leaving the database as it was."""

import os
import sqlite3
import stat
import threading
import time
import uuid
from contextlib import closing
from datetime import date, timedelta

import pytest
from conftest import PG_SERVER, _empty_postgres
from page_helpers import store
from sqlalchemy import MetaData, Table, create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from tracker.backup import backup, restore
from tracker.cli import main
from tracker.db import make_engine, migrate
from tracker.errors import TrackerError
from tracker.models import Batch, Comment, Observation
from tracker.submissions import submit_observations

HEAD = "0014"


@pytest.fixture
def second_database(database_url, tmp_path):
    """URL of a second, empty database on the same backend (nothing in it, not migrated)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.sqlite3'}"
        return
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def observation(measure, place, day, value, **extra):
    return {"measure": measure, "place": place, "date": day, "value": value, **extra}


def work(ref, status="planned", **extra):
    point = {"type": "Point", "coordinates": [172.605, -43.535]}
    return {"id": ref, "title": f"Work {ref}", "status": status, "geometry": point, **extra}


def fill(app) -> None:
    """Realistic rows through the write path: observations (one revised, one with a
    dimension cell), works (one revised), a published comment and a staff account."""
    from staff_helpers import add_user

    store(
        app,
        "eqc",
        observations=[
            observation("homes-repaired", "opawa", "2014-06-30", 60),
            observation("homes-repaired", "st-albans", "2014-06-30", 150),
        ],
    )
    store(app, "eqc", observations=[observation("homes-repaired", "opawa", "2014-06-30", 64)])
    store(
        app,
        "council",
        observations=[
            observation("wellbeing-score", "opawa", "2014-12-31", 65),
            observation("people-supported", "opawa", "2014-03-31", 40, dims={"age": "65+"}),
        ],
        works=[work("w1"), work("w2", status="in_progress", planned_start="2014-01-10")],
    )
    store(app, "council", works=[work("w1", status="complete", actual_end="2014-05-01")])
    with Session(app.extensions["engine"]) as session:
        session.add(
            Comment(
                place_id="opawa",
                author_name="Ana",
                body="Is Ōpāwa Road done?",
                email="ana@example.org",
                status="published",
            )
        )
        session.commit()
    add_user(app, "official@example.org", role="official")


def every_row(url_or_engine) -> dict[str, list[tuple]]:
    """Each table of the schema (and alembic_version) with its rows in primary-key order."""
    engine = url_or_engine if not isinstance(url_or_engine, str) else make_engine(url_or_engine)
    tables = list(SQLModel.metadata.sorted_tables)
    tables.append(Table("alembic_version", MetaData(), autoload_with=engine))
    with engine.connect() as connection:
        rows = {
            table.name: [
                tuple(row)
                for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in tables
        }
    if isinstance(url_or_engine, str):
        engine.dispose()
    return rows


def test_a_round_trip_keeps_every_row_of_every_table(
    app, runner, second_database, tmp_path, monkeypatch
):
    fill(app)
    before = every_row(app.extensions["engine"])
    assert before["observationrevision"] and before["comment"] and before["workstatuschange"]
    path = tmp_path / "copies" / "tracker.backup"
    path.parent.mkdir()

    result = runner.invoke(main, ["backup", str(path)])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"Backup written to {path}: ")
    assert "5 batches, 4 observations, 2 works, 1 comment," in line
    assert "1 staff account " in line and "(schema 0014, " in line
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["tracker.backup"]  # no leftovers
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # emails and hashes: the owner's only

    monkeypatch.setenv("TRACKER_DATABASE_URL", second_database)
    result = runner.invoke(main, ["restore", str(path)])
    assert result.exit_code == 0, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"Restored {path} (")
    assert "5 batches, 4 observations, 2 works, 1 comment," in line
    assert every_row(second_database) == before
    assert every_row(app.extensions["engine"]) == before  # the backup changed nothing


def test_the_restored_database_serves_and_takes_new_batches(app, second_database, tmp_path):
    fill(app)
    summary = backup(app.extensions["engine"], tmp_path / "b")
    restore(second_database, summary.path)
    engine = make_engine(second_database)
    try:
        with Session(engine) as session:  # new ids follow the restored ones (sequences)
            outcome = submit_observations(
                session,
                agency_id="eqc",
                rows=[observation("homes-repaired", "riccarton", "2015-01-31", 10)],
                channel="api",
            )
            session.commit()
            assert outcome.accepted == 1
            assert session.scalar(select(func.max(Batch.id))) == 6
    finally:
        engine.dispose()


def _writer(app, stop: threading.Event, written: list[int], failures: list[BaseException]):
    """Submit batches of three new observations each until `stop`."""
    day = date(2012, 1, 1)
    try:
        while not stop.is_set():
            rows = [
                observation("homes-repaired", place, day.isoformat(), len(written))
                for place in ("opawa", "st-albans", "riccarton")
            ]
            store(app, "eqc", observations=rows)
            written.append(1)
            day += timedelta(days=1)
    except BaseException as exc:  # reported by the test, not lost in the thread
        failures.append(exc)


def _whole_batches(url: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The number of batches in the database, and those missing some of their rows."""
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            stored = dict(
                session.execute(
                    select(Observation.batch_id, func.count()).group_by(Observation.batch_id)
                ).all()
            )
            batches = session.execute(select(Batch.id, Batch.accepted)).all()
    finally:
        engine.dispose()
    return len(batches), [(b, n, stored.get(b, 0)) for b, n in batches if stored.get(b) != n]


def test_a_backup_taken_while_batches_arrive_is_consistent(app, second_database, tmp_path):
    engine = app.extensions["engine"]
    sqlite = engine.dialect.name == "sqlite"
    stop, written, failures = threading.Event(), [], []
    thread = threading.Thread(target=_writer, args=(app, stop, written, failures))
    thread.start()
    copies = []  # (summary, batches stored before it began, and when it ended)
    try:
        started = time.monotonic()
        while len(written) < 3:
            time.sleep(0.01)
        while time.monotonic() - started < 2:
            before = len(written)
            # One page per step and no pause: the writer restarts the copy again and again
            # until it is taken in one step (SQLite); pg_dump reads one snapshot anyway.
            path = tmp_path / f"b{len(copies)}"
            summary = backup(engine, path, pages=1, sleep=0)
            copies.append((summary, before, len(written)))
            if not sqlite and len(copies) == 2:
                break  # checking a dump takes a restore
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len(copies) >= 2
    assert any(after > before for _, before, after in copies), "no batch arrived meanwhile"
    assert len(written) > copies[-1][2]
    for summary, before, after in copies:
        if sqlite:
            with closing(sqlite3.connect(summary.path)) as copy:
                assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            url = f"sqlite:///{summary.path}"
        else:
            restore(second_database, summary.path, force=True)
            url = second_database
        count, broken = _whole_batches(url)
        assert broken == []
        assert before <= count == summary.counts["batch"] <= after + 1  # one may be on its way
        assert summary.counts["observation"] == 3 * count


def test_restore_refuses_a_database_with_data_without_force(app, runner, tmp_path):
    fill(app)
    engine = app.extensions["engine"]
    path = tmp_path / "tracker.backup"
    assert runner.invoke(main, ["backup", str(path)]).exit_code == 0
    backed_up = every_row(engine)
    store(app, "eqc", observations=[observation("homes-repaired", "riccarton", "2015-01-31", 9)])
    now = every_row(engine)

    result = runner.invoke(main, ["restore", str(path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: The database already holds data (6 batches, 5 observations, 2 works, "
        "1 comment, 1 staff account): restore with --force to replace it (back it up first).\n"
    )
    assert every_row(engine) == now

    result = runner.invoke(main, ["restore", "--force", str(path)])
    assert result.exit_code == 0, result.output
    assert every_row(engine) == backed_up


def test_restore_into_an_initialised_empty_database_needs_no_force(app, engine, runner, tmp_path):
    """Places, measures and agencies come from the tree: they are not data to keep."""
    path = tmp_path / "tracker.backup"
    assert backup(engine, path).counts["batch"] == 0
    result = runner.invoke(main, ["restore", str(path)])
    assert result.exit_code == 0, result.output
    assert "0 batches, 0 observations" in result.output


def _random_bytes(path):
    path.write_bytes(os.urandom(4096))


def _empty_file(path):
    path.write_bytes(b"")


def _empty_sqlite(path):
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")  # a valid SQLite file with no tables


def _other_sqlite(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")


def _newer_schema(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('9999')")


def _half_a_dump(path):
    path.write_bytes(b"PGDMP" + os.urandom(300))


# What each backend says; {p} is the file.
NOT_A_BACKUP = {
    "random bytes": (_random_bytes, "{p} is not a tracker backup: it is not {what}"),
    "empty file": (_empty_file, "{p} is not a tracker backup: it is not {what}"),
    "empty SQLite": (_empty_sqlite, "{p} is not a tracker backup: it has no alembic_version"),
    "other SQLite": (_other_sqlite, "{p} is not a tracker backup: it has no alembic_version"),
    "newer schema": (_newer_schema, "{p} has schema revision 9999, which this tracker does not"),
    "half a dump": (_half_a_dump, "Reading {p} failed (exit 1): "),
}


def test_restore_refuses_a_file_that_is_not_a_tracker_backup(app, runner, tmp_path):
    """Every kind of wrong file, even with --force, on one database per backend."""
    fill(app)
    engine = app.extensions["engine"]
    before = every_row(engine)
    sqlite = engine.dialect.name == "sqlite"
    for kind, (make, message) in NOT_A_BACKUP.items():
        path = tmp_path / f"{kind.replace(' ', '-')}.backup"
        make(path)
        if sqlite:
            expected = message.format(p=path, what="an SQLite database.")
            if kind == "half a dump":
                expected = f"{path} is a PostgreSQL backup (pg_dump) but the configured database"
        else:
            expected = message.format(p=path, what="a pg_dump archive (--format=custom).")
            if kind in ("empty SQLite", "other SQLite", "newer schema"):
                expected = f"{path} is an SQLite backup but the configured database is PostgreSQL."

        result = runner.invoke(main, ["restore", "--force", str(path)])
        assert result.exit_code == 1, (kind, result.output)
        assert result.stderr.startswith(f"Error: {expected}"), (kind, result.stderr)
        assert every_row(engine) == before, kind


def test_backup_refuses_an_existing_file_and_a_missing_folder(engine, runner, tmp_path):
    path = tmp_path / "old.backup"
    path.write_bytes(b"last week's")
    result = runner.invoke(main, ["backup", str(path)])
    assert result.exit_code == 1
    assert "already exists: back up to a new file" in result.stderr
    assert path.read_bytes() == b"last week's"
    result = runner.invoke(main, ["backup", str(tmp_path / "nowhere" / "new.backup")])
    assert result.exit_code == 1
    assert f"No folder {tmp_path / 'nowhere'}" in result.stderr


def test_an_older_backup_is_migrated_when_restored(engine, second_database, tmp_path):
    """A backup of schema 0013 restored over a database at the head: its tables and rows
    come back and the missing migration runs (on PostgreSQL the newer tables go first)."""
    old = make_engine(second_database)
    try:
        migrate(old, "0013")
        with old.begin() as connection:
            connection.execute(text("INSERT INTO agency (id, name) VALUES ('eqc', 'EQC')"))
        summary = backup(old, tmp_path / "old.backup")
    finally:
        old.dispose()
    assert summary.revision == "0013"

    restored = restore(engine, summary.path)
    assert (restored.revision, restored.migrated_to) == ("0013", HEAD)
    rows = every_row(engine)
    assert rows["alembic_version"] == [(HEAD,)]
    assert [row[:2] for row in rows["agency"]] == [("eqc", "EQC")]
    assert rows["challenge"] == []  # made again by migration 0014


def test_a_failing_pg_dump_leaves_no_file(postgres_database, tmp_path, monkeypatch):
    path = tmp_path / "tracker.backup"
    wrong = make_url(postgres_database).set(database="tracker_test_missing")
    with pytest.raises(TrackerError, match='database "tracker_test_missing" does not exist'):
        backup(wrong.render_as_string(hide_password=False), path)
    assert list(tmp_path.iterdir()) == []

    # A pg_dump that writes half a file and fails (a full disk, a dropped connection).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in --file=*) echo PGDMP-half > "${a#--file=}";; esac; done\n'
        "echo 'pg_dump: error: could not write to output file: No space left on device' >&2\n"
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TrackerError, match=r"pg_dump failed \(exit 1\): .*No space left"):
        backup(postgres_database, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]

    monkeypatch.setenv("PATH", str(bin_dir / "empty"))
    with pytest.raises(TrackerError, match="pg_dump is not installed"):
        backup(postgres_database, path)
    path.write_bytes(b"PGDMP")
    with pytest.raises(TrackerError, match="pg_restore is not installed"):
        restore(postgres_database, path, force=True)


def test_the_password_goes_in_the_environment_not_the_command_line(
    postgres_database, tmp_path, monkeypatch
):
    """The fake pg_dump records what it was given; a URL's password must not be there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pg_dump"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho "$PGPASSWORD" > {tmp_path}/env\nexit 3\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    url = make_url(postgres_database).set(password="s3cret-word")
    with pytest.raises(TrackerError, match=r"exit 3"):
        backup(url.render_as_string(hide_password=False), tmp_path / "b")
    args = (tmp_path / "args").read_text()
    assert "s3cret" not in args
    assert "--format=custom" in args and f"--dbname={url.database}" in args
    assert (tmp_path / "env").read_text().strip() == "s3cret-word"


def test_a_restore_behind_an_open_transaction_gives_up_and_changes_nothing(
    postgres_database, tmp_path, monkeypatch
):
    """A worker holding a table open would make pg_restore wait for ever: it gives up
    after the lock timeout, and its one transaction leaves the database as it was."""
    import tracker.backup

    _empty_postgres(postgres_database)
    engine = make_engine(postgres_database)
    try:
        path = backup(engine, tmp_path / "b").path
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO agency (id, name) VALUES ('eqc', 'EQC')"))
        before = every_row(engine)
        monkeypatch.setattr(tracker.backup, "LOCK_WAIT_SECONDS", 0.5)
        holder = create_engine(postgres_database)
        with holder.connect() as connection, connection.begin():
            connection.execute(text("SELECT count(*) FROM agency"))  # holds ACCESS SHARE
            started = time.monotonic()
            with pytest.raises(TrackerError) as refused:
                restore(engine, path, force=True)
            assert time.monotonic() - started < 10
        assert str(refused.value).startswith(f"Restoring {path} gave up after 0.5 s waiting")
        assert "idle in transaction: SELECT count(*) FROM agency" in str(refused.value)
        assert "nothing was changed" in str(refused.value)
        holder.dispose()
        assert every_row(engine) == before
    finally:
        engine.dispose()
