"""batch response dropped: nothing ever wrote or read it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

The first schema kept room for each batch's JSON answer, to replay it for a retried
Idempotency-Key. Replays are rebuilt from the batch's own counts instead (accepted,
revised, unchanged), so the column stayed empty on every database.
"""

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # In place, as 0007 does: copying the table means dropping the one every batch
    # reference points at, refused on SQLite while foreign keys are on.
    with op.batch_alter_table('batch', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('response')


def downgrade() -> None:
    with op.batch_alter_table('batch', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('response', sa.JSON(), nullable=True))
