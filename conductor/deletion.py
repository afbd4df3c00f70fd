"""Snapshot deletion by the child-count rule: the patent's deletion method.

Under the disk's lock, from rows read after the disk's row was locked, the
conductor counts the node's children (child snapshots plus the live image
when it sits on the node):

* 0 children: **physical** delete; the agent removes the file and the
  record goes.
* 1 child: **merge**; the agent pauses the VM's I/O, merges the snapshot
  into its child, points the child at the snapshot's parent, deletes the
  file and resumes.
* a linked clone among them (``conductor.clones``): **logical** delete
  whatever the count; the clone disk's data needs the snapshot's layer as
  it is, so it is never merged into the clone, and is finished once no
  linked clone is left.
* 2 or more: **logical** delete; the snapshot becomes ``deleted``, hidden
  from its owner, and the data stays because the children need it.  When
  later changes leave it with one child or none, the conductor finishes it
  by itself with an operation of its own (``requested_by: conductor``).
"""

import logging

from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import locking
from conductor import operations
from conductor import states
from conductor import tree
from livesnap import tasks

LOG = logging.getLogger(__name__)


def _plan(session, snap, disk):
    """Decide the mode and build the agent's task (step 1 and 3 of the
    patent's deletion method).  ``None`` task: nothing for the agent.
    """
    kids = tree.children(session, snap, disk)
    if len(kids) >= 2 or tree.has_clones(kids):
        return 'logical', None, len(kids)
    if not kids:
        return 'physical', tasks.delete_task(
            'physical', disk.locator, snap.locator), 0
    parent = session.get(models.Snapshot, snap.parent_id) \
        if snap.parent_id else None
    child = kids[0]
    leaf = child.is_active or not tree.children(session, child.snapshot, disk)
    return 'merge', tasks.delete_task(
        'merge', disk.locator, snap.locator,
        parent=parent.locator if parent else tree.origin_locator(
            session, disk), child=child.locator,
        child_is_leaf=leaf), 1


def delete(ctxt, snapshot_id, project_id=None,
           requested_by=operations.TENANT):
    """Delete a snapshot by the child-count rule.

    The children are counted on rows read under the disk's row lock.  If
    the disk is busy with the conductor's own deferred deletion, the
    operation is recorded ``pending`` (mode not yet decided, snapshot
    ``deleting``) and the count is made when it starts.
    :param requested_by: who asks (``operations.REQUESTERS``): a tenant,
        or a snapshot policy pruning its snapshots.
    :returns: (the operation id, the :class:`operations.Outgoing` to send
        or None).
    :raises: NotFound, DiskBusy, InvalidState, HostDown,
        SnapshotProtected (its owner pinned it)
    """
    operation_id = operations.new_id()
    with db.transaction() as s:
        snap, disk, server, free = creation.claim_snapshot(
            s, snapshot_id, project_id)
        if snap.protected:
            raise exception.SnapshotProtected(snapshot=snap.id)
        if snap.status not in (states.AVAILABLE, states.ERROR):
            raise exception.InvalidState(snapshot=snap.id, status=snap.status,
                                         action='deletion')
        if snap.status == states.ERROR:
            # A failed create left no file: only the record goes, and it is
            # nobody's parent, so this needs no lock.
            operations.record(s, operation_id, 'delete', server, disk,
                              snapshot_id=snap.id, mode='physical',
                              status=states.SUCCEEDED,
                              requested_by=requested_by)
            s.get(models.Operation, operation_id).steps = [
                operations.step('delete', detail='record only')]
            s.delete(snap)
            return operation_id, None
        op = operations.record(s, operation_id, 'delete', server, disk,
                               snapshot_id=snap.id,
                               prior_status=states.AVAILABLE,
                               requested_by=requested_by)
        sent = None
        if free:
            send = start_delete(s, op, server, disk, snap)
            sent = operations.outgoing(op) if send else None
        else:
            states.check_snapshot(snap, states.DELETING)
            send = False
            LOG.info('Deleting snapshot %(snap)s: operation %(op)s waits '
                     'for the conductor\'s own work on the disk',
                     {'snap': snapshot_id, 'op': operation_id})
    if send:
        LOG.info('Deleting snapshot %(snap)s: %(mode)s, operation %(op)s',
                 {'snap': snapshot_id, 'mode': op.mode, 'op': operation_id})
    return operation_id, sent


def start_delete(session, op, server, disk, snap=None):
    """Count the children on rows read under the disk's row lock, then
    delete logically (at once) or start the agent's task.

    :returns: True if a task is to be dispatched, False if it ended here.
    :raises: HostDown, InvalidState
    """
    snap = snap or session.get(models.Snapshot, op.snapshot_id)
    if snap is None or snap.status not in (states.AVAILABLE,
                                           states.DELETING):
        raise exception.InvalidState(
            snapshot=op.snapshot_id,
            status=snap.status if snap is not None else 'gone',
            action='deletion')
    mode, task, count = _plan(session, snap, disk)
    op.mode = mode
    if mode == 'logical':
        _delete_logically(session, op, snap, count)
        return False
    hosts.ensure_alive(session, server.host)
    states.check_snapshot(snap, states.DELETING)
    operations.lock_disk_and_start(session, op, disk, task)
    return True


def _delete_logically(session, op, snap, count):
    states.check_snapshot(snap, states.DELETED)
    op.steps = [operations.step('count-children', children=count),
                operations.step('delete-logically')]
    operations.set_status(op, states.SUCCEEDED)
    LOG.info('Snapshot %(snap)s has %(n)d children: deleted logically '
             '(operation %(op)s); it is finished once it has one or none',
             {'snap': snap.id, 'n': count, 'op': op.id})


def finish_deferred(disk_id):
    """Start finishing one logically deleted snapshot of the disk, if one
    now has a single child or none, the disk is free and no tenant's
    operation waits for it (tenants go first).

    Called after every operation on the disk ends, and periodically.  Each
    finished node may free its parent, so this runs again when that
    operation ends, until nothing is left.  The tree is read under the
    disk's row lock.
    :returns: the :class:`operations.Outgoing` of the operation started
        (``conductor.dispatch`` sends it), or None.
    """
    operation_id = operations.new_id()
    with db.transaction() as s:
        disk = locking.disk_for_update(s, disk_id)
        if disk is None or disk.operation_id is not None:
            return None
        if db.queued_operation(s, disk.id) is not None:
            return None
        ready = tree.deferred(s, disk)
        if not ready or not db.host_is_alive(s, disk.server.host):
            return None
        snap = ready[0]
        mode, task, count = _plan(s, snap, disk)
        op = operations.record(s, operation_id, 'delete', disk.server, disk,
                             snapshot_id=snap.id, mode=mode,
                             prior_status=states.DELETED,
                             requested_by=operations.CONDUCTOR)
        states.check_snapshot(snap, states.DELETING)
        operations.lock_disk_and_start(s, op, disk, task)
        op.steps = [operations.step('count-children', children=count)]
        sent = operations.outgoing(op)
    LOG.info('Finishing deferred deletion of snapshot %(snap)s: %(mode)s, '
             'operation %(op)s', {'snap': snap.id, 'mode': mode,
                                  'op': operation_id})
    return sent


def apply_deleted(session, op, result):
    snap = session.get(models.Snapshot, op.snapshot_id)
    disk = session.get(models.Disk, op.disk_id)
    if op.mode == 'merge':
        # Redefine the child's parent: the snapshot's parent, or none.  A
        # merge that committed the child into the snapshot's layer (the
        # cheaper way) leaves that layer holding the child: its locator
        # moves.
        survivor = result.get('child')
        # (A commit of the live layer leaves the disk's path alone: the
        # survivor is the disk, issue 20.)
        moved = result.get('direction') == 'commit' and survivor and \
            survivor != result.get('disk')
        if disk.snapshot_id == snap.id:
            disk.snapshot_id = snap.parent_id
        if result.get('disk'):
            disk.locator = result['disk']
        for child in db.snapshots_of_disk(session, disk.id):
            if child.parent_id == snap.id:
                child.parent_id = snap.parent_id
                if moved:
                    child.locator = survivor
                if result.get('child_size_bytes') is not None and \
                        child.locator == survivor:
                    child.size_bytes = result['child_size_bytes']
    session.delete(snap)


def apply_delete_failure(session, op, report):
    snap = session.get(models.Snapshot, op.snapshot_id)
    if snap is not None:
        states.check_snapshot(snap, op.prior_status or states.AVAILABLE)
