"""current revision lives in the observation row; observation tables without foreign keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A value sent once was two rows: the observation and an identical revision 1. Now the
observation row is its latest revision and ObservationRevision keeps only the values it
held before (the layout of a system-versioned table: current rows, and a history of the
rows they replaced), so a new value is one row. `first_received_at` keeps the arrival of
revision 1, which timeliness counts.

The foreign keys of observation and observationrevision go. On PostgreSQL each key is a
row-by-row check: the three on an observation made a bulk insert three times slower
(docs/performance.md). They guarded nothing the write path leaves open: it checks
measure and place against the tree (a place the measure covers, stricter than a key)
and creates the batch in the same transaction, and node, place and batch rows are never
deleted (nodes are retired). tests/test_db.py checks that no write leaves an orphan.
"""

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate writes sqlmodel.sql.sqltypes.*)
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# PostgreSQL's own names for unnamed keys; SQLite's batch mode names them the same way.
NAMES = {"fk": "%(table_name)s_%(column_0_name)s_fkey"}
OBSERVATION_KEYS = (("measure_id", "node"), ("place_id", "place"), ("batch_id", "batch"))
REVISION_KEYS = (("observation_id", "observation"), ("batch_id", "batch"))


def upgrade() -> None:
    with op.batch_alter_table('observation', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('first_received_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    # By row order, not revision number: before the per-agency write lock, two batches at
    # once could store two rows with one number. The first row is revision 1, the last
    # is the observation's current value.
    op.execute(
        "UPDATE observation SET first_received_at = COALESCE("
        " (SELECT r.received_at FROM observationrevision r"
        "  WHERE r.observation_id = observation.id ORDER BY r.id LIMIT 1),"
        " received_at)"
    )
    op.execute(
        "DELETE FROM observationrevision WHERE id IN"
        " (SELECT max(id) FROM observationrevision GROUP BY observation_id)"
    )
    # The table that refers to observation first: SQLite rebuilds a table to drop a key.
    with op.batch_alter_table('observationrevision', naming_convention=NAMES) as batch_op:
        for column, _table in REVISION_KEYS:
            batch_op.drop_constraint(f'observationrevision_{column}_fkey', type_='foreignkey')
    with op.batch_alter_table('observation', naming_convention=NAMES) as batch_op:
        batch_op.alter_column(
            'first_received_at', existing_type=sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False
        )
        for column, _table in OBSERVATION_KEYS:
            batch_op.drop_constraint(f'observation_{column}_fkey', type_='foreignkey')


def downgrade() -> None:
    # Re-adding the keys fails if a reference was left dangling meanwhile (none should be).
    op.execute(
        "INSERT INTO observationrevision"
        " (observation_id, revision, value, batch_id, received_at, note)"
        " SELECT id, revisions, value, batch_id, received_at, note FROM observation"
    )
    with op.batch_alter_table('observation', naming_convention=NAMES) as batch_op:
        batch_op.drop_column('first_received_at')
        for column, table in OBSERVATION_KEYS:
            batch_op.create_foreign_key(f'observation_{column}_fkey', table, [column], ['id'])
    with op.batch_alter_table('observationrevision', naming_convention=NAMES) as batch_op:
        for column, table in REVISION_KEYS:
            batch_op.create_foreign_key(
                f'observationrevision_{column}_fkey', table, [column], ['id']
            )
