"""the snapshots' quiesce, consistency and consistency_reason

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('snapshots') as batch:
        batch.add_column(sa.Column('quiesce', sa.String(length=16),
                                   nullable=True))
        batch.add_column(sa.Column('consistency', sa.String(length=16),
                                   nullable=True))
        batch.add_column(sa.Column('consistency_reason',
                                   sa.String(length=255), nullable=True))


def downgrade():
    with op.batch_alter_table('snapshots') as batch:
        batch.drop_column('consistency_reason')
        batch.drop_column('consistency')
        batch.drop_column('quiesce')
