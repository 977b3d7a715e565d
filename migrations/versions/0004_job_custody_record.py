"""jobs: what OMERO holds for a job (images, originals, attachments), its warnings and accounting

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 04:20:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = ("images", "originals", "attachments", "warnings", "accounted")


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name in COLUMNS:  # jobs from before know none of it
            batch_op.add_column(sa.Column(name, sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
