"""snapshot policies (schedules with retention), their runs, and the
snapshots' policy_id and protected

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 09:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'snapshot_policies',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('server_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('disks', sa.JSON(), nullable=True),
        sa.Column('interval', sa.Integer(), nullable=True),
        sa.Column('cron', sa.String(length=255), nullable=True),
        sa.Column('timezone', sa.String(length=64), nullable=False),
        sa.Column('keep_last', sa.Integer(), nullable=False),
        sa.Column('keep_hourly', sa.Integer(), nullable=False),
        sa.Column('keep_daily', sa.Integer(), nullable=False),
        sa.Column('keep_weekly', sa.Integer(), nullable=False),
        sa.Column('keep_monthly', sa.Integer(), nullable=False),
        sa.Column('keep_yearly', sa.Integer(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('last_run', sa.DateTime(), nullable=True),
        sa.Column('next_run', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['server_id'], ['servers.id'], ),
        sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('snapshot_policies', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_snapshot_policies_next_run'),
                              ['next_run'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshot_policies_project_id'),
                              ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_snapshot_policies_server_id'),
                              ['server_id'], unique=False)

    op.create_table(
        'policy_runs',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('policy_id', sa.String(length=36), nullable=False),
        sa.Column('project_id', sa.String(length=64), nullable=False),
        sa.Column('disk_id', sa.String(length=36), nullable=True),
        sa.Column('disk_name', sa.String(length=64), nullable=False),
        sa.Column('scheduled_for', sa.DateTime(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('reason_code', sa.String(length=64), nullable=True),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt', sa.DateTime(), nullable=True),
        sa.Column('snapshot_id', sa.String(length=36), nullable=True),
        sa.Column('operation_id', sa.String(length=36), nullable=True),
        sa.Column('prune_status', sa.String(length=16), nullable=False),
        sa.Column('prune_claimed_until', sa.DateTime(), nullable=True),
        sa.Column('pruned_ids', sa.JSON(), nullable=True),
        sa.Column('conductor', sa.String(length=255), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['policy_id'], ['snapshot_policies.id'],
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('policy_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_policy_runs_created_at'),
                              ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_policy_runs_policy_id'),
                              ['policy_id'], unique=False)

    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('policy_id', sa.String(length=36),
                                      nullable=True))
        batch_op.add_column(sa.Column('protected', sa.Boolean(),
                                      server_default=sa.false(),
                                      nullable=False))
        batch_op.create_index(batch_op.f('ix_snapshots_policy_id'),
                              ['policy_id'], unique=False)


def downgrade():
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_snapshots_policy_id'))
        batch_op.drop_column('protected')
        batch_op.drop_column('policy_id')
    op.drop_table('policy_runs')
    op.drop_table('snapshot_policies')
