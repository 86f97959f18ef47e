"""node definition version: writes no longer make each process re-read the tree

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

data_version moves on every write as well as on every change of definition, so the
roll-up rebuilt its tree of definitions and re-read the written measures' places after
each write (about 12 ms of a 1,000-row write's roll-up). definition_version moves only
when the tree changes a node, and keys the cache of definitions.
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('definition_version', sa.Integer(), nullable=False, server_default='0')
        )


def downgrade() -> None:
    with op.batch_alter_table('node', schema=None) as batch_op:
        batch_op.drop_column('definition_version')
