"""Online snapshot creation: the patent's creation method, conductor side.

The conductor checks ownership, the host's liveness and the disk's lock,
names the new layer (the patent's step 2: "set the names of the disk
snapshot files"), records the snapshot as ``creating``, and casts the task.
The agent pauses, pivots and resumes; its report makes the snapshot
``available`` (or ``error`` with the reason).
"""

import logging
import os

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import limits
from conductor import operations

LOG = logging.getLogger(__name__)


def layer_path(disk, operation_id):
    """Name of a new writable layer: beside the current one, by ids only."""
    return os.path.join(os.path.dirname(disk.active_image),
                        '%s-%s.qcow2' % (disk.id, operation_id))


def lock_or_raise(session, server, disk, operation_id):
    if not db.lock_disk(session, disk.id, operation_id):
        session.refresh(disk)
        raise exception.DiskBusy(disk=disk.name, server=server.id,
                                 operation=disk.operation_id)


def lock_snapshot(session, snapshot_id, project_id, operation_id):
    """Find a snapshot its owner can see and take its disk's lock.

    :returns: (snapshot, disk, server)
    :raises: NotFound, DiskBusy
    """
    snap = db.snapshot_get(session, snapshot_id, project_id,
                           include_deleted=False)
    disk = snap.disk
    server = disk.server
    lock_or_raise(session, server, disk, operation_id)
    return snap, disk, server


def create(ctxt, server_id, disk_name, name, project_id=None):
    """Start an online snapshot of one disk.

    :param project_id: the caller's project, or None for an admin.
    :returns: (snapshot, operation) records.
    :raises: NotFound, HostDown, DiskBusy
    """
    operation_id = operations.new_id()
    snapshot_id = operations.new_id()
    with db.transaction() as s:
        server = db.server_get(s, server_id, project_id)
        disk = db.disk_get_by_name(s, server, disk_name)
        hosts.ensure_alive(s, server.host)
        lock_or_raise(s, server, disk, operation_id)
        limits.check_create(s, server, disk)
        task = {'operation_id': operation_id,
                'disk': {'qmp_socket': server.qmp_socket,
                         'active_image': disk.active_image},
                'new_image': layer_path(disk, operation_id)}
        snap = models.Snapshot(
            id=snapshot_id, disk_id=disk.id, project_id=server.project_id,
            parent_id=disk.snapshot_id, name=name, status='creating',
            image=disk.active_image)
        s.add(snap)
        s.flush()
        operations.make(s, operation_id, 'create', server, disk,
                             snapshot_id=snapshot_id, task=task)
    LOG.info('Snapshot %(snap)s of %(server)s/%(disk)s: operation %(op)s '
             'sent to %(host)s', {'snap': snapshot_id, 'server': server_id,
                                  'disk': disk_name, 'op': operation_id,
                                  'host': server.host})
    operations.dispatch(ctxt, operation_id)
    return snapshot_id, operation_id


def _created(session, op, result):
    snap = session.get(models.Snapshot, op.snapshot_id)
    disk = session.get(models.Disk, op.disk_id)
    snap.status = 'available'
    snap.image = result.get('snapshot_image', snap.image)
    snap.size_bytes = result.get('size_bytes')
    disk.active_image = result['active_image']
    disk.snapshot_id = snap.id
    op.mode = 'online' if result.get('online') else 'offline'


def _create_failed(session, op, report):
    snap = session.get(models.Snapshot, op.snapshot_id)
    if snap is not None:
        # Nothing was made on disk: the agent rolls a failed create back.
        snap.status = 'error'
        snap.image = None


operations.register_handlers('create', _created, _create_failed)
