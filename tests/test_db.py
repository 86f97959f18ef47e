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
    from tracker.rollup import MeasureDef
    from tracker.rollup.leaves import _latest

    engine = make_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    migrate(engine)
    migrate(engine)  # seeded once, not twice
    measure = MeasureDef(
        id="m",
        title="M",
        unit=None,
        kind="cumulative",
        aggregate="sum",
        frequency="monthly",
        start=date(2020, 1, 1),
        due=date(2021, 1, 1),
        milestones=(),
        dimensions=(),
        city_baseline=None,
        city_target=None,
        data_version=1,
        places={},
    )
    with Session(engine) as session:
        stats = session.execute(text("SELECT tbl, idx, stat FROM sqlite_stat1")).all()
        assert sorted(stats) == sorted(SQLITE_STATISTICS)
        query = _latest(session, [(measure, "")], date(2020, 6, 1))
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = [row[3] for row in session.execute(text("EXPLAIN QUERY PLAN " + sql))]
    reads = [step for step in plan if step.startswith("SEARCH observation ")]
    assert reads and all("sqlite_autoindex_observation_1" in step for step in reads), plan
    engine.dispose()


def _alembic(engine, verb: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from tracker.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)


def _insert_place_agency_and_measure(connection) -> None:
    """Place 'p', agency 'a' and measure 'm' as rows of the schema of 0003 to 0006."""
    connection.execute(
        text(
            "INSERT INTO place (id, name, level, search_key, geometry, display_geometry,"
            " label_lon, label_lat, min_lon, min_lat, max_lon, max_lat)"
            " VALUES ('p', 'P', 'neighbourhood', 'p', '{}', '{}', 0, 0, 0, 0, 0, 0)"
        )
    )
    connection.execute(text("INSERT INTO agency (id, name) VALUES ('a', 'A')"))
    connection.execute(
        text("INSERT INTO node (id, kind, position, title, weight, data_version)"
             " VALUES ('m', 'measure', 0, 'M', 1, 0)")
    )  # fmt: skip


def test_migration_0004_keeps_every_revision_and_the_first_arrival(engine):
    """Down to 0003 (a revision row for every value), rows in, up again: the current value
    moves into the observation row alone, the replaced ones stay, and back down again."""
    _alembic(engine, "downgrade", "0003")
    with engine.begin() as connection:
        _insert_place_agency_and_measure(connection)
        for batch, day in ((1, "2026-01-01"), (2, "2026-02-01")):
            connection.execute(
                text(
                    "INSERT INTO batch (id, agency_id, channel, received_at, accepted, revised,"
                    f" unchanged) VALUES ({batch}, 'a', 'api', '{day} 00:00:00', 1, 0, 0)"
                )
            )
        # Observation 1 was sent twice (10, then 11); observation 2 once; observation 3
        # twice at once before the write lock existed (6, then 7, both numbered 1).
        for obs, day, value, revisions, batch in ((1, "2025-12-31", 11, 2, 2),
                                                  (2, "2025-11-30", 5, 1, 1),
                                                  (3, "2025-10-31", 7, 1, 2)):  # fmt: skip
            connection.execute(
                text(
                    "INSERT INTO observation (id, measure_id, place_id, date, dims_key, value,"
                    f" revisions, batch_id, received_at) VALUES ({obs}, 'm', 'p', '{day}', '',"
                    f" {value}, {revisions}, {batch}, '2026-0{batch}-01 00:00:00')"
                )
            )
        for obs, revision, value, batch in ((1, 1, 10, 1), (2, 1, 5, 1), (1, 2, 11, 2),
                                            (3, 1, 6, 1), (3, 1, 7, 2)):  # fmt: skip
            connection.execute(
                text(
                    "INSERT INTO observationrevision (observation_id, revision, value,"
                    f" batch_id, received_at) VALUES ({obs}, {revision}, {value},"
                    f" {batch}, '2026-0{batch}-01 00:00:00')"
                )
            )
    _alembic(engine, "upgrade", "head")
    with engine.connect() as connection:
        kept = connection.execute(
            text("SELECT observation_id, revision, value FROM observationrevision")
        ).all()
        first = connection.execute(
            text("SELECT id, first_received_at FROM observation ORDER BY id")
        ).all()
    assert sorted(tuple(row) for row in kept) == [(1, 1, 10), (3, 1, 6)]
    assert [(obs, str(at)[:10]) for obs, at in first] == [
        (1, "2026-01-01"),
        (2, "2026-01-01"),
        (3, "2026-01-01"),
    ]

    _alembic(engine, "downgrade", "0003")
    with engine.connect() as connection:
        every = connection.execute(
            text("SELECT observation_id, revision, value FROM observationrevision"
                 " ORDER BY observation_id, revision")
        ).all()  # fmt: skip
    assert sorted(tuple(row) for row in every) == [(1, 1, 10), (1, 2, 11), (2, 1, 5),
                                                   (3, 1, 6), (3, 1, 7)]  # fmt: skip
    _alembic(engine, "upgrade", "head")


def test_migration_0007_adds_place_retired_at_and_takes_it_away_keeping_rows(engine):
    """Down to 0006 and up again with a place that other rows refer to: the rows stay,
    only the column comes and goes (SQLite drops it in place, not by copying the table)."""
    _alembic(engine, "downgrade", "0006")
    assert "retired_at" not in {c["name"] for c in inspect(engine).get_columns("place")}
    with engine.begin() as connection:
        _insert_place_agency_and_measure(connection)
        connection.execute(
            text("INSERT INTO measureplace (measure_id, place_id) VALUES ('m', 'p')")
        )
    _alembic(engine, "upgrade", "head")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, retired_at FROM place")).all() == [("p", None)]
    _alembic(engine, "downgrade", "0006")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM place")).all() == [("p",)]
        assert connection.execute(text("SELECT place_id FROM measureplace")).all() == [("p",)]
    assert "retired_at" not in {c["name"] for c in inspect(engine).get_columns("place")}
    _alembic(engine, "upgrade", "head")


def test_migration_0008_drops_batch_response_keeping_batches(engine):
    """batch.response was never written: down to 0007 it comes back empty, up it goes, and
    the batches (which works and audit events point at) stay."""
    _alembic(engine, "downgrade", "0007")
    assert "response" in {c["name"] for c in inspect(engine).get_columns("batch")}
    with engine.begin() as connection:
        _insert_place_agency_and_measure(connection)
        connection.execute(
            text(
                "INSERT INTO batch (agency_id, channel, received_at, accepted, revised, unchanged)"
                " VALUES ('a', 'api', '2026-12-01 00:00:00', 1, 0, 0)"
            )
        )
    _alembic(engine, "upgrade", "head")
    assert "response" not in {c["name"] for c in inspect(engine).get_columns("batch")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT agency_id, accepted FROM batch")).all() == [("a", 1)]


def test_migration_0009_measures_the_stored_works_against_the_streets(engine):
    """Down to 0008, a street and three works in, up again: the new workstreet table holds
    the work 20 m from the street and the one filed under it, not the one 300 m off; down
    again it goes and the works stay."""
    _alembic(engine, "downgrade", "0008")
    assert "workstreet" not in inspect(engine).get_table_names()
    line = '{"type":"LineString","coordinates":[[172.601,-43.535],[172.609,-43.535]]}'
    with engine.begin() as connection:
        _insert_place_agency_and_measure(connection)
        connection.execute(
            text(
                "INSERT INTO batch (id, agency_id, channel, received_at, accepted, revised,"
                " unchanged) VALUES (1, 'a', 'api', '2026-12-01 00:00:00', 3, 0, 0)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO street (id, name, search_key, geometry, length_m, min_lon, min_lat,"
                f" max_lon, max_lat) VALUES ('s', 'S', 's', '{line}', 645, 172.601, -43.535,"
                " 172.609, -43.535)"
            )
        )
        # 20 m north of the street (0.00018°), 300 m north, and filed under it far away.
        for ref, lat, street in (("near", -43.53482, None), ("far", -43.5323, None),
                                 ("filed", -43.5, "'s'")):  # fmt: skip
            point = f'{{"type":"Point","coordinates":[172.605,{lat}]}}'
            connection.execute(
                text(
                    "INSERT INTO work (agency_id, ref, title, status, geometry, street_id,"
                    " min_lon, min_lat, max_lon, max_lat, batch_id, updated_at) VALUES"
                    f" ('a', '{ref}', 'W', 'planned', '{point}', {street or 'NULL'}, 172.605,"
                    f" {lat}, 172.605, {lat}, 1, '2026-12-01 00:00:00')"
                )
            )
    _alembic(engine, "upgrade", "head")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT w.ref, s.street_id, s.distance_m FROM workstreet s"
                " JOIN work w ON w.id = s.work_id ORDER BY w.ref"
            )
        ).all()
    assert [(ref, street) for ref, street, _ in rows] == [("filed", "s"), ("near", "s")]
    assert 19 < rows[1][2] < 21
    _alembic(engine, "downgrade", "0008")
    assert "workstreet" not in inspect(engine).get_table_names()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM work")).scalar() == 3
    _alembic(engine, "upgrade", "head")
