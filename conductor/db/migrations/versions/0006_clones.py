"""new disks from a snapshot: disks.clone_of, disks.clone_mode and
operations.target

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 10:20:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('clone_of', sa.String(length=36),
                                      nullable=True))
        batch_op.add_column(sa.Column('clone_mode', sa.String(length=16),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_disks_clone_of'),
                              ['clone_of'], unique=False)
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('target', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_column('target')
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_disks_clone_of'))
        batch_op.drop_column('clone_mode')
        batch_op.drop_column('clone_of')
