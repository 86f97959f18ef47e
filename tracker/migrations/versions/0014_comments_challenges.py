"""comments: moderated, on places, works and measures; challenges of finished works

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel  # noqa: F401  (autogenerate writes sqlmodel.sql.sqltypes.AutoString)
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('challenge',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('work_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('location', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('author_name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('answer', sa.Text(), nullable=True),
    sa.Column('answered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('answered_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['answered_by'], ['user.id'], ),
    sa.ForeignKeyConstraint(['work_id'], ['work.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_challenge_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_challenge_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_challenge_work_id'), ['work_id'], unique=False)

    with op.batch_alter_table('comment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('measure_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
        batch_op.add_column(sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('moderated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('published_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('reports', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_comment_email'), ['email'], unique=False)
        batch_op.create_index(batch_op.f('ix_comment_measure_id'), ['measure_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_comment_status'), ['status'], unique=False)
        batch_op.create_foreign_key('fk_comment_measure_id_node', 'node', ['measure_id'], ['id'])

    # The old statuses were visible | hidden; nothing wrote comments then, but be exact.
    op.execute("UPDATE comment SET status = 'published' WHERE status = 'visible'")
    op.execute("UPDATE comment SET status = 'rejected' WHERE status = 'hidden'")


def downgrade() -> None:
    op.execute("UPDATE comment SET status = 'visible' WHERE status = 'published'")
    op.execute("UPDATE comment SET status = 'hidden' WHERE status <> 'visible'")
    with op.batch_alter_table('comment', schema=None) as batch_op:
        batch_op.drop_constraint('fk_comment_measure_id_node', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_comment_status'))
        batch_op.drop_index(batch_op.f('ix_comment_measure_id'))
        batch_op.drop_index(batch_op.f('ix_comment_email'))
        batch_op.drop_column('reports')
        batch_op.drop_column('published_at')
        batch_op.drop_column('moderated_at')
        batch_op.drop_column('reason')
        batch_op.drop_column('email')
        batch_op.drop_column('measure_id')

    with op.batch_alter_table('challenge', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_challenge_work_id'))
        batch_op.drop_index(batch_op.f('ix_challenge_status'))
        batch_op.drop_index(batch_op.f('ix_challenge_email'))

    op.drop_table('challenge')
