"""Snapshot deletion by the child-count rule: the patent's deletion method.

Under the disk's lock, from the database, the conductor counts the node's
children (child snapshots plus the live image when it sits on the node):

* 0 children: **physical** delete; the agent removes the file and the
  record goes.
* 1 child: **merge**; the agent pauses the VM's I/O, merges the snapshot
  into its child, points the child at the snapshot's parent, deletes the
  file and resumes.
* 2 or more: **logical** delete; the snapshot becomes ``deleted``, hidden
  from its owner, and the data stays because the children need it.  When
  later changes leave it with one child or none, the conductor finishes it
  by itself with an operation of its own (``requested_by: conductor``).
"""

import logging

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import operations
from conductor import snapshots
from conductor import tree
from livesnap import context

LOG = logging.getLogger(__name__)


def _plan(session, snap, disk):
    """Decide the mode and build the agent's task (step 1 and 3 of the
    patent's deletion method).  ``None`` task: nothing for the agent."""
    kids = tree.children(session, snap, disk)
    if len(kids) >= 2:
        return 'logical', None, len(kids)
    disk_spec = {'qmp_socket': disk.server.qmp_socket,
                 'active_image': disk.active_image}
    if not kids:
        return 'physical', {'mode': 'physical', 'disk': disk_spec,
                            'snapshot_image': snap.image}, 0
    parent = session.get(models.Snapshot, snap.parent_id) \
        if snap.parent_id else None
    child = kids[0]
    leaf = child.is_active or not tree.children(session, child.snapshot, disk)
    return 'merge', {'mode': 'merge', 'disk': disk_spec,
                     'snapshot_image': snap.image,
                     'parent_image': parent.image if parent else None,
                     'child_image': child.image,
                     'child_is_leaf': leaf}, 1


def delete(ctxt, snapshot_id, project_id=None):
    """Delete a snapshot by the child-count rule.

    :returns: the operation id.
    :raises: NotFound, DiskBusy, InvalidState, HostDown
    """
    operation_id = operations.new_id()
    with db.transaction() as s:
        snap, disk, server = snapshots.lock_snapshot(
            s, snapshot_id, project_id, operation_id)
        if snap.status not in ('available', 'error'):
            raise exception.InvalidState(snapshot=snap.id, status=snap.status,
                                         action='deletion')
        if snap.status == 'error':
            # A failed create left no file: only the record goes.
            operations.make(s, operation_id, 'delete', server, disk,
                            snapshot_id=snap.id, mode='physical',
                            status='succeeded')
            s.get(models.Operation, operation_id).steps = [
                operations.step('delete', detail='record only')]
            s.delete(snap)
            db.unlock_disk(s, disk.id, operation_id)
            return operation_id
        mode, task, count = _plan(s, snap, disk)
        if mode == 'logical':
            _delete_logically(s, operation_id, snap, disk, server, count)
            return operation_id
        hosts.ensure_alive(s, server.host)
        task['operation_id'] = operation_id
        snap.status = 'deleting'
        operations.make(s, operation_id, 'delete', server, disk,
                        snapshot_id=snap.id, mode=mode, task=task,
                        prior_status='available')
    LOG.info('Deleting snapshot %(snap)s: %(mode)s, operation %(op)s',
             {'snap': snapshot_id, 'mode': mode, 'op': operation_id})
    operations.dispatch(ctxt, operation_id)
    return operation_id


def _delete_logically(session, operation_id, snap, disk, server, count):
    snap.status = 'deleted'
    op = operations.make(session, operation_id, 'delete', server, disk,
                         snapshot_id=snap.id, mode='logical',
                         status='succeeded')
    op.steps = [operations.step('count-children', children=count),
                operations.step('delete-logically')]
    db.unlock_disk(session, disk.id, operation_id)
    LOG.info('Snapshot %(snap)s has %(n)d children: deleted logically '
             '(operation %(op)s); it is finished once it has one or none',
             {'snap': snap.id, 'n': count, 'op': operation_id})


def finish_deferred(ctxt, disk_id):
    """Start finishing one logically deleted snapshot of the disk, if one
    now has a single child or none and the disk is free.

    Called after every operation on the disk ends, and periodically.  Each
    finished node may free its parent, so this runs again when that
    operation ends, until nothing is left.
    :returns: the operation id started, or None.
    """
    operation_id = operations.new_id()
    with db.transaction() as s:
        disk = s.get(models.Disk, disk_id)
        if disk is None or disk.operation_id is not None:
            return None
        ready = tree.deferred(s, disk)
        if not ready or not db.host_is_alive(s, disk.server.host):
            return None
        if not db.lock_disk(s, disk.id, operation_id):
            return None
        snap = ready[0]
        mode, task, count = _plan(s, snap, disk)
        task['operation_id'] = operation_id
        snap.status = 'deleting'
        op = operations.make(s, operation_id, 'delete', disk.server, disk,
                             snapshot_id=snap.id, mode=mode, task=task,
                             prior_status='deleted',
                             requested_by='conductor')
        op.steps = [operations.step('count-children', children=count)]
    LOG.info('Finishing deferred deletion of snapshot %(snap)s: %(mode)s, '
             'operation %(op)s', {'snap': snap.id, 'mode': mode,
                                  'op': operation_id})
    operations.dispatch(ctxt or context.make(), operation_id)
    return operation_id


def _deleted(session, op, result):
    snap = session.get(models.Snapshot, op.snapshot_id)
    disk = session.get(models.Disk, op.disk_id)
    if op.mode == 'merge':
        # Redefine the child's parent: the snapshot's parent, or none.  A
        # merge that committed the child into the snapshot's file (the
        # cheaper way) leaves that file holding the child: its image moves.
        survivor = result.get('child_image')
        moved = result.get('direction') == 'commit' and survivor
        if disk.snapshot_id == snap.id:
            disk.snapshot_id = snap.parent_id
            if moved:
                disk.active_image = survivor
        for child in db.snapshots_of_disk(session, disk.id):
            if child.parent_id == snap.id:
                child.parent_id = snap.parent_id
                if moved:
                    child.image = survivor
                if result.get('child_size_bytes') is not None and \
                        child.image == result.get('child_image'):
                    child.size_bytes = result['child_size_bytes']
    session.delete(snap)


def _delete_failed(session, op, report):
    snap = session.get(models.Snapshot, op.snapshot_id)
    if snap is not None:
        snap.status = op.prior_status or 'available'


operations.register_handlers('delete', _deleted, _delete_failed)
operations.register_after_finish(finish_deferred)
