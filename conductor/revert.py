"""Revert a disk to a snapshot: a new live image on top of it.

Allowed only while the server is shut off, as in every anchor system: a
running guest's page cache and the disk would disagree.  The new live image
starts a new branch of the tree; the old live image is discarded (no
snapshot ever sits on a live image: taking a snapshot turns the live image
into the snapshot's own layer).  The snapshot the old image sat on loses a
child, which may let a logically deleted snapshot be finished.
"""

import logging

from conductor import agent_versions
from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import operations
from conductor import states
from livesnap import locators
from livesnap import tasks

LOG = logging.getLogger(__name__)


def server_running(ctxt, server, disks):
    """Ask the host's agent whether a running VM uses one of ``disks``
    (the server's disk locators).  A server that cannot be running as far
    as livesnap knows (``livesnap.locators.may_run``: a QEMU server
    registered without a QMP socket) is not asked about.
    """
    if not locators.may_run(server.driver, disks):
        return False
    try:
        agent = agent_versions.client()
        return any(agent.disk_online(ctxt, server.host, disk)
                   for disk in disks)
    except Exception as exc:
        LOG.warning('Could not ask %(host)s about %(server)s: %(error)s',
                    {'host': server.host, 'server': server.id,
                     'error': exc})
        raise exception.HostDown(host=server.host)


def revert(ctxt, snapshot_id, project_id=None):
    """Revert a disk to a snapshot; waits (``pending``) if the disk is busy
    with the conductor's own deferred deletion.

    :returns: (the operation id, the :class:`operations.Outgoing` to
        send, or None if it waits).
    :raises: NotFound, InvalidState, ServerRunning, DiskBusy, HostDown
    """
    with db.transaction() as s:
        snap = db.snapshot_get(s, snapshot_id, project_id,
                               include_deleted=False)
        server = snap.disk.server
        if snap.status != states.AVAILABLE:
            raise exception.InvalidState(snapshot=snap.id, status=snap.status,
                                         action='revert')
        hosts.ensure_alive(s, server.host)
        disks = [d.locator for d in server.disks]
    # Outside the transaction: an RPC round trip holds no database lock.
    if server_running(ctxt, server, disks):
        raise exception.ServerRunning(server=server.id)
    operation_id = operations.new_id()
    with db.transaction() as s:
        snap, disk, server, free = creation.claim_snapshot(
            s, snapshot_id, project_id)
        if snap.status != states.AVAILABLE:
            raise exception.InvalidState(snapshot=snap.id, status=snap.status,
                                         action='revert')
        op = operations.record(s, operation_id, 'revert', server, disk,
                             snapshot_id=snap.id, mode='offline')
        if free:
            start_revert(s, op, server, disk, snap)
            sent = operations.outgoing(op)
    if not free:
        LOG.info('Reverting %(server)s/%(disk)s to snapshot %(snap)s: '
                 'operation %(op)s waits for the conductor\'s own work on '
                 'the disk', {'server': server.id, 'disk': disk.name,
                              'snap': snapshot_id, 'op': operation_id})
        return operation_id, None
    LOG.info('Reverting %(server)s/%(disk)s to snapshot %(snap)s, '
             'operation %(op)s', {'server': server.id, 'disk': disk.name,
                                  'snap': snapshot_id, 'op': operation_id})
    return operation_id, sent


def start_revert(session, op, server, disk, snap=None):
    """Start a revert on a free disk whose row is locked.  (The agent
    refuses it if the server was started meanwhile.)

    :returns: True (a task to dispatch).
    :raises: HostDown, InvalidState
    """
    snap = snap or session.get(models.Snapshot, op.snapshot_id)
    if snap is None or snap.status != states.AVAILABLE:
        raise exception.InvalidState(
            snapshot=op.snapshot_id,
            status=snap.status if snap is not None else 'gone',
            action='revert')
    hosts.ensure_alive(session, server.host)
    operations.lock_disk_and_start(session, op, disk, tasks.revert_task(
        disk.locator, snap.locator, creation.layer_name(disk, op.id),
        discard=disk.locator))
    return True


def apply_reverted(session, op, result):
    disk = session.get(models.Disk, op.disk_id)
    disk.locator = result['disk']
    disk.snapshot_id = op.snapshot_id


def apply_revert_failure(session, op, report):
    """The agent leaves the old live image in place on failure."""
