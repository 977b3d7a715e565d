"""daily-use: e-mail when a long import ends (per import, remembered per user), staff's daily digest

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 23:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify_imports', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('failure_digest', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('notify', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('notified_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('notified_at')
        batch_op.drop_column('notify')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('failure_digest')
        batch_op.drop_column('notify_imports')
