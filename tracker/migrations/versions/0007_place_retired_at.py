"""place retired_at: a neighbourhood dropped from the boundaries is retired, not kept live

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A neighbourhood removed from (or renamed in) the boundaries file used to stay a live
place: listed by /api/v1/places, found by street search and still given new works.
Deleting it would orphan its observations and history, so it is retired instead, as
agencies, nodes and feeds are, and comes back if a later file has it again.
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('place', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('retired_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    # SQLite (3.35 and later) drops a column in place; copying the table instead, as batch
    # mode would, means dropping the table every place reference points at: refused while
    # foreign keys are on.
    with op.batch_alter_table('place', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('retired_at')
