"""rate counters: hits per client per fixed window, shared by every worker (tracker.ratelimit)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ratecounter',
    sa.Column('bucket', sqlmodel.sql.sqltypes.AutoString(length=50), nullable=False),
    sa.Column('client', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('window_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('bucket', 'client', 'window_start')
    )
    with op.batch_alter_table('ratecounter', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ratecounter_window_start'), ['window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ratecounter', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ratecounter_window_start'))
    op.drop_table('ratecounter')
