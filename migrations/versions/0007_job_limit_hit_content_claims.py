"""hostile runtime: which limit stopped a job's conversion, and one claim per content and group

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 23:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('limit_hit', sa.String(length=16), nullable=True))
    op.create_table('content_claims',
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('group_id', sa.BigInteger(), nullable=False),
    sa.Column('content_sha1', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=255), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('owner_id', 'group_id', 'content_sha1')
    )
    op.create_index('ix_content_claims_job_id', 'content_claims', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_content_claims_job_id', table_name='content_claims')
    op.drop_table('content_claims')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('limit_hit')
