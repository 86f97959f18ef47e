"""drop the (measure_id, date) index of observation

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Every read of observations names the measure and its places, which uq_observation
(measure_id, place_id, dims_key, date) serves with one seek per series. The
(measure_id, date) index beside it only ever led a planner astray: without statistics
(a table fresh from a bulk load, before autovacuum analyses it) PostgreSQL took it for
the roll-up's latest-value seeks and read each measure's whole history, 550 rows per
series where 6 were wanted (88 ms against a few). One index fewer also makes every
insert cheaper.
"""

from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('observation', schema=None) as batch_op:
        batch_op.drop_index('ix_observation_measure_date')


def downgrade() -> None:
    with op.batch_alter_table('observation', schema=None) as batch_op:
        batch_op.create_index('ix_observation_measure_date', ['measure_id', 'date'], unique=False)
