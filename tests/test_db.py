"""Migrations and database plumbing, on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from tracker.db import make_engine, migrate


def test_migrations_create_every_table(engine):
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_match_the_models(engine):
    """A model change without a migration fails here."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_migrate_is_idempotent(engine):
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    assert len(versions) == 1


def test_migrate_from_empty_sqlite(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
    migrate(engine)
    assert "observation" in inspect(engine).get_table_names()
    engine.dispose()


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'pragmas.sqlite3'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    engine.dispose()


def test_sqlite_planner_seeks_each_series_before_any_analyze(tmp_path):
    """Seeded statistics steer the roll-up's latest-value query onto uq_observation."""
    from datetime import date

    from sqlmodel import Session

    from tracker.db import SQLITE_STATISTICS
    from tracker.rollup import MeasureDef, _latest

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    migrate(engine)
    migrate(engine)  # seeded once, not twice
    measure = MeasureDef(
        "m", "M", None, "cumulative", "sum", "monthly", date(2020, 1, 1), date(2021, 1, 1),
        (), (), None, None, 1, {},
    )  # fmt: skip
    with Session(engine) as session:
        stats = session.execute(text("SELECT tbl, idx, stat FROM sqlite_stat1")).all()
        assert sorted(stats) == sorted(SQLITE_STATISTICS)
        query = _latest(session, [(measure, "")], date(2020, 6, 1))
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = [row[3] for row in session.execute(text("EXPLAIN QUERY PLAN " + sql))]
    reads = [step for step in plan if step.startswith("SEARCH observation ")]
    assert reads and all("sqlite_autoindex_observation_1" in step for step in reads), plan
    engine.dispose()
