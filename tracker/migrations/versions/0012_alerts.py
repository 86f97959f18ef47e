"""alerts: subscriptions found by place and street; outbox rows can be given up on; residents' "your data" keys

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('residentkey',
    sa.Column('key_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key_hash')
    )
    with op.batch_alter_table('residentkey', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_residentkey_email'), ['email'], unique=False)
    with op.batch_alter_table('outboxmail', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscription_place_id'), ['place_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_subscription_street_id'), ['street_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscription_street_id'))
        batch_op.drop_index(batch_op.f('ix_subscription_place_id'))
    with op.batch_alter_table('outboxmail', schema=None) as batch_op:
        batch_op.drop_column('failed_at')
    with op.batch_alter_table('residentkey', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_residentkey_email'))
    op.drop_table('residentkey')
