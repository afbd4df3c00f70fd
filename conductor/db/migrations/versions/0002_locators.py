"""driver locators

Each disk and snapshot gets the driver-tagged locator the agent's driver
uses (``agent.driver.base``), and each server the name of its driver.  The
rows already there are QEMU's: ``{"driver": "qemu", "qmp_socket": the server's
socket, "path": the disk's active image}`` for a disk, ``{"driver":
"qemu", "path": image}`` for a snapshot with an image.  The old columns
stay, as a copy of the locator's path.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('driver', sa.String(length=32),
                                      nullable=False,
                                      server_default='qemu'))
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locator', sa.JSON(), nullable=True))
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locator', sa.JSON(), nullable=True))

    bind = op.get_bind()
    servers = sa.table('servers', sa.column('id', sa.String),
                       sa.column('qmp_socket', sa.String))
    disks = sa.table('disks', sa.column('id', sa.String),
                     sa.column('server_id', sa.String),
                     sa.column('active_image', sa.String),
                     sa.column('locator', sa.JSON))
    snapshots = sa.table('snapshots', sa.column('id', sa.String),
                         sa.column('image', sa.String),
                         sa.column('locator', sa.JSON))
    sockets = dict(bind.execute(sa.select(servers.c.id,
                                          servers.c.qmp_socket)).all())
    for disk_id, server_id, path in bind.execute(sa.select(
            disks.c.id, disks.c.server_id, disks.c.active_image)).all():
        bind.execute(disks.update().where(disks.c.id == disk_id).values(
            locator={'driver': 'qemu', 'qmp_socket': sockets.get(server_id),
                     'path': path}))
    for snap_id, path in bind.execute(sa.select(
            snapshots.c.id, snapshots.c.image)
            .where(snapshots.c.image.isnot(None))).all():
        bind.execute(snapshots.update().where(snapshots.c.id == snap_id)
                     .values(locator={'driver': 'qemu', 'path': path}))


def downgrade():
    with op.batch_alter_table('snapshots', schema=None) as batch_op:
        batch_op.drop_column('locator')
    with op.batch_alter_table('disks', schema=None) as batch_op:
        batch_op.drop_column('locator')
    with op.batch_alter_table('servers', schema=None) as batch_op:
        batch_op.drop_column('driver')
