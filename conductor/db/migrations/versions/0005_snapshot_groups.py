"""snapshot groups: several disks of one server in one pause

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 10:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'snapshot_groups',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('server_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('operation_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['server_id'], ['servers.id']),
        sa.PrimaryKeyConstraint('id'))
    op.create_index('ix_snapshot_groups_project_id', 'snapshot_groups',
                    ['project_id'])
    op.create_index('ix_snapshot_groups_server_id', 'snapshot_groups',
                    ['server_id'])
    with op.batch_alter_table('snapshots') as batch:
        batch.add_column(sa.Column('group_id', sa.String(length=36),
                                   nullable=True))
        batch.create_index('ix_snapshots_group_id', ['group_id'])


def downgrade():
    with op.batch_alter_table('snapshots') as batch:
        batch.drop_index('ix_snapshots_group_id')
        batch.drop_column('group_id')
    op.drop_index('ix_snapshot_groups_server_id', 'snapshot_groups')
    op.drop_index('ix_snapshot_groups_project_id', 'snapshot_groups')
    op.drop_table('snapshot_groups')
