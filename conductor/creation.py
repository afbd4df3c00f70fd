"""Online snapshot creation: the patent's creation method, conductor side.

The conductor checks ownership, the host's liveness and the disk's lock,
names the new layer (the patent's step 2: "set the names of the disk
snapshot files"), records the snapshot as ``creating``, and casts the task.
The agent pauses, pivots and resumes; its report makes the snapshot
``available`` (or ``error`` with the reason).
"""

import datetime
import logging

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import limits
from conductor import locking
from conductor import operations
from conductor import states
from livesnap import locators
from livesnap import tasks

LOG = logging.getLogger(__name__)


def layer_name(disk, operation_id):
    """Name of a new writable layer, by ids only; the agent's driver
    places it (the QEMU driver as ``<disk>-<operation>.qcow2`` beside the
    live layer).
    """
    return '%s-%s' % (disk.id, operation_id)


def claim_snapshot(session, snapshot_id, project_id):
    """Find a snapshot its owner can see, lock its disk's row and re-read
    both, so every decision that follows is made on the newest rows.

    :returns: (snapshot, disk, server, free): ``free`` is False when the
        disk is busy with the conductor's own work and the tenant's
        operation is to wait for it (see ``operations.may_start_now``).
    :raises: NotFound, DiskBusy
    """
    snap = db.snapshot_get(session, snapshot_id, project_id,
                           include_deleted=False)
    disk = locking.disk_for_update(session, snap.disk_id)
    # Re-read under the lock: it may have changed, or gone, meanwhile.
    snap = db.snapshot_get(session, snapshot_id, project_id,
                           include_deleted=False)
    server = disk.server
    free = operations.may_start_now(session, server, disk)
    return snap, disk, server, free


#: the quiesce modes a create may ask for
QUIESCE_MODES = ('required', 'preferred', 'off')


def quiesce_mode(requested, disk):
    """The quiesce a create gets: what was asked, else ``preferred`` when
    the disk's server has a guest agent channel (``qga_socket``), else
    ``off``.
    """
    if requested:
        return requested
    return 'preferred' if locators.has_guest_agent(disk.locator) else 'off'


def create(ctxt, server_id, disk_name, name, project_id=None, quiesce=None,
           requested_by=operations.TENANT):
    """Start an online snapshot of one disk.

    :param quiesce: ``required``, ``preferred`` or ``off`` (None: the
        default of ``quiesce_mode``).  ``required`` is refused at once
        (BadRequest) when the server has no guest agent channel or its
        host's agent is older than RPC 1.7.

    If the disk is busy with the conductor's own deferred deletion, the
    operation is recorded ``pending`` and starts when the disk is free.
    :param project_id: the caller's project, or None for an admin.
    :param requested_by: who asks (``operations.REQUESTERS``): a tenant,
        or a snapshot policy's run.
    :returns: (snapshot id, operation id, the
        :class:`operations.Outgoing` to send, or None if it waits).
    :raises: NotFound, HostDown, DiskBusy, ChainTooDeep, QuotaExceeded
    """
    operation_id = operations.new_id()
    snapshot_id = operations.new_id()
    with db.transaction() as s:
        # The disk's row is locked before anything else is read, so every
        # row below is read once, fresh.
        disk = locking.disk_for_update(s, db.disk_id_by_name(
            s, server_id, disk_name, project_id))
        if disk is None:
            raise exception.NotFound('Server %s has no disk named %s.'
                                     % (server_id, disk_name))
        server = disk.server
        hosts.ensure_alive(s, server.host)
        free = operations.may_start_now(s, server, disk)
        if quiesce == 'required':
            _check_quiesce(server, disk)
        # Its parent and layer are set when it starts (``start_create``).
        snap = models.Snapshot(
            id=snapshot_id, disk_id=disk.id, project_id=server.project_id,
            parent_id=None, name=name, status=states.CREATING, image=None,
            quiesce=quiesce)
        s.add(snap)
        s.flush()
        op = operations.record(s, operation_id, 'create', server, disk,
                               snapshot_id=snapshot_id,
                               requested_by=requested_by)
        if free:
            start_create(s, op, server, disk, snap, host_checked=True)
            sent = operations.outgoing(op)
        else:
            # The chain depth is checked when it starts: the conductor's
            # work in progress may shorten the chain.
            limits.check_create(s, server, disk, snapshot_id=snapshot_id,
                                depth=False)
    if not free:
        LOG.info('Snapshot %(snap)s of %(server)s/%(disk)s: operation '
                 '%(op)s waits for the conductor\'s own work on the disk',
                 {'snap': snapshot_id, 'server': server_id,
                  'disk': disk_name, 'op': operation_id})
        return snapshot_id, operation_id, None
    LOG.info('Snapshot %(snap)s of %(server)s/%(disk)s: operation %(op)s '
             'sent to %(host)s', {'snap': snapshot_id, 'server': server_id,
                                  'disk': disk_name, 'op': operation_id,
                                  'host': server.host})
    return snapshot_id, operation_id, sent


def _check_quiesce(server, disk):
    """:raises: BadRequest if ``required`` quiesce cannot be had."""
    if not locators.has_guest_agent(disk.locator):
        raise exception.BadRequest(
            'Quiesce required, but server %s has no guest agent channel '
            '(qga_socket).' % server.id)
    if agent_versions.QUIESCE not in \
            agent_versions.capabilities(server.host):
        raise exception.BadRequest(
            'Quiesce required, but the agent of the server\'s host is older '
            'than RPC 1.7 and cannot quiesce.')


def _quiesce_task(task, server, disk, snap):
    """Add ``quiesce`` to a create task if the host's agent takes it
    (RPC 1.7); else the snapshot is ``crash`` consistent, and says why.
    """
    mode = quiesce_mode(snap.quiesce, disk)
    if agent_versions.QUIESCE in agent_versions.capabilities(server.host):
        task['quiesce'] = mode
    else:
        snap.consistency = 'crash'
        snap.consistency_reason = (
            'the host\'s agent is older than RPC 1.7 and cannot quiesce')
    return task


def start_create(session, op, server, disk, snap=None, host_checked=False):
    """Decide and start a create on a free disk whose row is locked: the
    limits, the parent (the live image's position) and the new layer's
    name are all taken from rows read under that lock.

    :param host_checked: the caller has checked the host's liveness in
        this transaction.
    :returns: True (a task to dispatch).
    :raises: HostDown, ChainTooDeep, QuotaExceeded
    """
    snap = snap or session.get(models.Snapshot, op.snapshot_id)
    if not host_checked:
        hosts.ensure_alive(session, server.host)
    limits.check_create(session, server, disk, snapshot_id=snap.id)
    snap.parent_id = disk.snapshot_id
    # The live layer becomes the snapshot's; the driver says so in its
    # result, which replaces this.
    snap.locator = disk.locator
    task = _quiesce_task(tasks.create_task(
        disk.locator, layer_name(disk, op.id)), server, disk, snap)
    operations.lock_disk_and_start(session, op, disk, task)
    return True


def record_consistency(snap, task, result):
    """What the snapshot got, from the driver's ``result`` if the agent
    was asked to quiesce (``quiesce`` in the ``task``: a create of RPC
    1.7, a group of 1.9), else ``crash`` (the reason set when the task was
    built, or that the agent did not quiesce).
    """
    if 'quiesce' in (task or {}) and \
            result.get('consistency') in ('application', 'crash'):
        snap.consistency = result['consistency']
        snap.consistency_reason = str(
            result.get('consistency_reason') or '')[:255] or None
    elif snap.consistency is None:
        snap.consistency = 'crash'
        snap.consistency_reason = 'the agent did not quiesce'


def taken_at(op, result):
    """When the snapshot was taken: the driver's ``taken_at`` (the start
    of its pause, on QEMU's clock where the driver has it), else, for an
    offline create (no pause), the start of the agent's first step.

    :returns: a naive UTC datetime, or None.
    """
    when = result.get('taken_at')
    if when is None:
        when = min((s['started_at'] for s in op.steps or []
                    if isinstance(s, dict) and s.get('started_at')),
                   default=None)
    try:
        return datetime.datetime.fromtimestamp(
            float(when), datetime.timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def apply_created(session, op, result):
    snap = session.get(models.Snapshot, op.snapshot_id)
    disk = session.get(models.Disk, op.disk_id)
    states.check_snapshot(snap, states.AVAILABLE)
    snap.locator = result.get('snapshot') or snap.locator
    snap.size_bytes = result.get('size_bytes')
    snap.taken_at = taken_at(op, result)
    record_consistency(snap, op.task, result)
    disk.locator = result['disk']
    disk.snapshot_id = snap.id
    op.mode = 'online' if result.get('online') else 'offline'


def apply_create_failure(session, op, report):
    snap = session.get(models.Snapshot, op.snapshot_id)
    if snap is not None:
        # Nothing was made on disk: the agent rolls a failed create back.
        states.check_snapshot(snap, states.ERROR)
        snap.locator = None
