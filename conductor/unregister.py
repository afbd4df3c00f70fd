"""Unregistering a server: ``DELETE /v1/servers/{id}`` (issue 20, item 2).

The layers livesnap made are never unlinked blindly: the VM's live layer
may be backed by them.  Every snapshot of the server is deleted through
the child-count flow (``conductor.deletion``): the unregister marks them
all logically deleted, and the conductor's deferred deletion finishes
them one at a time, deepest first; a snapshot left with one child is
merged into it, so the live layer ends complete and self-contained.
The whole is one operation, ``server.delete``, with a step and its
progress per snapshot finished; while it runs the server is
``deleting``.  When no snapshot is left (:func:`advance`, called after
each operation on one of its disks ends and periodically), the records
go: disks, snapshot groups, policies and their runs; the operations'
history stays (the ``server.delete`` operation among it, so a client can
wait for it).

``keep_snapshots``: only the records go, at once; the answer lists the
snapshot layers left on the host.  ``force`` (its host is down): the same,
and the snapshot layers are listed too.  The files the disks were
registered with are never deleted.
"""

import logging

import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from conductor import operations
from conductor import states
from conductor import tree

LOG = logging.getLogger(__name__)

ACTION = operations.SERVER_DELETE
#: the status a server shows while it is being unregistered
DELETING = 'deleting'
ACTIVE = 'active'


class DisksBusy(exception.Conflict):
    """An operation runs or waits on one of the server's disks: try again
    when it has ended.
    """


class SnapshotsPinned(exception.Conflict):
    """A snapshot is protected or backs another server's linked clone: its
    layer must stay (``keep_snapshots``).
    """


def running(session, server_id):
    """The running ``server.delete`` operation of the server, or None."""
    return session.scalars(
        sa.select(models.Operation)
        .where(models.Operation.server_id == server_id,
               models.Operation.action == ACTION,
               models.Operation.status.in_(states.ACTIVE))
        .order_by(models.Operation.created_at)).first()


def deleting_ids(server_ids=None):
    """The ids of the servers being unregistered (among ``server_ids``)."""
    query = sa.select(models.Operation.server_id).where(
        models.Operation.action == ACTION,
        models.Operation.status.in_(states.ACTIVE))
    if server_ids is not None:
        query = query.where(models.Operation.server_id.in_(server_ids))
    with db.transaction() as s:
        return set(s.scalars(query))


def check_not_deleting(session, server):
    """:raises: Conflict if ``server`` is being unregistered."""
    op = running(session, server.id)
    if op is not None:
        raise exception.Conflict(
            'Server %s is being deleted (operation %s).' % (server.id, op.id))


def _files(session, server):
    """The snapshot layers of the server's disks (what stays on the host
    when only the records go).
    """
    out = []
    for disk in server.disks:
        for snap in db.snapshots_of_disk(session, disk.id):
            if snap.status == states.ERROR:
                continue
            out.append({'disk': disk.name, 'snapshot_id': snap.id,
                        'path': snap.image, 'locator': snap.locator})
    return out


def _remove_records(session, server):
    """Remove the server's records (not its operations' history)."""
    disk_ids = [d.id for d in server.disks]
    policy_ids = list(session.scalars(
        sa.select(models.SnapshotPolicy.id)
        .where(models.SnapshotPolicy.server_id == server.id)))
    if policy_ids:
        session.execute(sa.delete(models.PolicyRun).where(
            models.PolicyRun.policy_id.in_(policy_ids)))
        session.execute(sa.delete(models.SnapshotPolicy).where(
            models.SnapshotPolicy.id.in_(policy_ids)))
    if disk_ids:
        session.execute(sa.delete(models.Snapshot).where(
            models.Snapshot.disk_id.in_(disk_ids)))
    session.execute(sa.delete(models.SnapshotGroup).where(
        models.SnapshotGroup.server_id == server.id))
    for disk in list(server.disks):
        session.delete(disk)
    session.flush()
    session.delete(server)
    LOG.info('Unregistered server %(id)s (host %(host)s)',
             {'id': server.id, 'host': server.host})


def delete(ctxt, server_id, keep_snapshots=False, force=False):
    """Unregister a server.

    :param keep_snapshots: remove only the records; the snapshot layers
        stay and are listed.
    :param force: the same when the server's host is down (an admin's
        way out; nothing is sent to the host).
    :returns: ``(operation id or None, [files left], [disk ids])``: an
        operation id when the snapshots are being deleted (the disk ids
        are those whose deferred deletion is to be started by
        ``conductor.dispatch``), None when the records are already gone.
    :raises: NotFound, DisksBusy (an operation runs or waits on one of
        its disks), SnapshotsPinned (a snapshot is protected or backs
        another server's linked clone), HostDown
    """
    operation_id = operations.new_id()
    with db.transaction() as s:
        # The disks' row locks, then the server's (the order a create
        # takes them in): no work starts on a disk meanwhile, and two
        # unregisters at once (a duplicated event, a retry) start one
        # operation; the second finds it.
        s.scalars(sa.select(models.Disk)
                  .where(models.Disk.server_id == server_id)
                  .order_by(models.Disk.id).with_for_update()
                  .execution_options(populate_existing=True)).all()
        server = s.get(models.Server, server_id, with_for_update=True,
                       populate_existing=True)
        if server is None:
            raise exception.NotFound('Server %s could not be found.'
                                     % server_id)
        current = running(s, server.id)
        records_only = keep_snapshots or force
        if current is not None and not records_only:
            # Asked again (a retry, a duplicated event): the same work.
            return current.id, [], []
        for disk in server.disks:
            holder = disk.operation_id or (
                db.queued_operation(s, disk.id) or models.Operation()).id
            if holder is not None:
                raise DisksBusy(
                    'Operation %s runs on disk %s of server %s; try again '
                    'when it has ended.' % (holder, disk.name, server.id))
        snaps = [x for d in server.disks
                 for x in db.snapshots_of_disk(s, d.id)]
        if not records_only:
            for snap in snaps:
                if snap.protected:
                    raise SnapshotsPinned(
                        'Snapshot %s of server %s is protected; unprotect '
                        'it or delete the server with keep_snapshots=true.'
                        % (snap.id, server.id))
                clones = [c for c in tree.linked_clones(s, snap)
                          if c.server_id != server.id]
                if clones:
                    raise SnapshotsPinned(
                        'Snapshot %s of server %s backs the linked clone '
                        '%s of server %s; delete that first, or delete '
                        'with keep_snapshots=true.'
                        % (snap.id, server.id, clones[0].id,
                           clones[0].server_id))
            if not force:
                hosts.ensure_alive(s, server.host)
        live = [x for x in snaps if x.status != states.ERROR]
        if records_only or not live:
            files = _files(s, server) if records_only else []
            if current is not None:
                current.error = 'Removed the records only (%s).' % (
                    'forced' if force else 'keep_snapshots')
                operations.set_status(current, states.FAILED)
            _remove_records(s, server)
            return None, files, []
        op = operations.record(
            s, operation_id, ACTION, server, server.disks[0],
            status=states.RUNNING)
        op.target = {'snapshots': len(live)}
        op.progress = 0.0
        op.steps = [operations.step('mark-snapshots-deleted',
                                    snapshots=len(live))]
        for snap in snaps:
            if snap.status == states.ERROR:
                s.delete(snap)
            elif snap.status == states.AVAILABLE:
                states.check_snapshot(snap, states.DELETED)
        disk_ids = [d.id for d in server.disks]
    LOG.info('Deleting server %(id)s: its %(n)d snapshots go first '
             '(operation %(op)s)', {'id': server_id, 'n': len(live),
                                     'op': operation_id})
    return operation_id, [], disk_ids


def advance(server_id):
    """Move a running ``server.delete`` on: record progress, and remove
    the records once no snapshot is left; fail it if one of its
    snapshots' deletions failed.

    :returns: True if the server's records were removed now.
    """
    with db.transaction() as s:
        op = running(s, server_id)
        if op is None:
            return False
        op = s.get(models.Operation, op.id, with_for_update=True)
        if op.status not in states.ACTIVE:
            return False
        server = s.get(models.Server, server_id)
        if server is None:
            operations.set_status(op, states.SUCCEEDED)
            return False
        disks = [d.id for d in server.disks]
        left = list(s.scalars(sa.select(models.Snapshot).where(
            models.Snapshot.disk_id.in_(disks))))
        total = (op.target or {}).get('snapshots') or 1
        failed = s.scalars(
            sa.select(models.Operation)
            .where(models.Operation.server_id == server_id,
                   models.Operation.action == 'delete',
                   models.Operation.status == states.FAILED,
                   models.Operation.created_at >= op.created_at)
            .order_by(models.Operation.updated_at.desc())).first()
        if failed is not None and left:
            op.error = ('Deleting snapshot %s failed (operation %s): %s'
                        % (failed.snapshot_id, failed.id, failed.error))
            operations.set_status(op, states.FAILED)
            LOG.warning('Deleting server %(id)s failed: %(error)s',
                        {'id': server_id, 'error': op.error})
            return False
        op.progress = round(100.0 * (total - len(left)) / total, 1)
        if left:
            return False
        if any(d.operation_id for d in server.disks):
            return False
        op.steps = (op.steps or []) + [
            operations.step('delete-snapshots', snapshots=total),
            operations.step('remove-records')]
        _remove_records(s, server)
        op.progress = 100.0
        operations.set_status(op, states.SUCCEEDED)
    return True


def after_operation(operation_id):
    """An operation ended: if its server is being unregistered, move that
    on (:func:`advance`).  :returns: True if the records were removed.
    """
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        if op is None or op.action == ACTION or \
                running(s, op.server_id) is None:
            return False
        server_id = op.server_id
    return advance(server_id)
