"""Snapshot groups: several disks of one server in one pause.

One request names several (or all) disks of a server.  The conductor
locks every disk of the group in one transaction, in the order of the
disks' ids (so two conductors never wait on each other's locks), records
one ``creating`` snapshot per disk sharing a ``group_id``, and one
operation, ``create_group``, that holds every disk's lock.  The agent
(RPC 1.6, ``create_snapshots``) prepares every new layer, then pauses the
VM once and switches all disks in one QMP transaction: all or none, so
the disks are consistent with one another.  With ``quiesce`` (RPC 1.9)
the agent freezes the guest once before that pause and thaws it once
after; every member records what it got (``consistency``).  A group is
deleted and reverted as its members, one operation per disk.
"""

import logging

import sqlalchemy as sa

from conductor import agent_versions
from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import deletion
from conductor import exception
from conductor import hosts
from conductor import limits
from conductor import locking
from conductor import operations
from conductor import revert as revert_mod
from conductor import states
from livesnap import locators
from livesnap import tasks

LOG = logging.getLogger(__name__)

#: The agent RPC version that takes ``create_snapshots``.
GROUP_VERSION = agent_versions.CAPABILITY_VERSIONS[agent_versions.GROUPS]
#: The agent RPC version whose ``create_snapshots`` takes ``quiesce``.
GROUP_QUIESCE_VERSION = agent_versions.CAPABILITY_VERSIONS[
    agent_versions.GROUP_QUIESCE]


class AgentTooOld(exception.Conflict):
    code = 'agent_too_old'
    message = ('The agent of host %(host)s is older than RPC %(version)s '
               'and cannot snapshot several disks in one pause; upgrade it '
               'or snapshot the disks one by one.')


def _pick_disks(server, disk_names):
    """The server's disks named in ``disk_names`` (None: all of them),
    sorted by id: the order their locks are taken in.

    :raises: NotFound, BadRequest
    """
    if disk_names is None:
        disks = list(server.disks)
    else:
        if len(set(disk_names)) != len(disk_names):
            raise exception.BadRequest('A disk is named twice.')
        disks = [db.disk_get_by_name(None, server, n) for n in disk_names]
    if not disks:
        raise exception.BadRequest('The server has no disks.')
    return sorted(disks, key=lambda d: d.id)


def _check_quiesce(server, disk):
    """:raises: BadRequest if ``required`` quiesce cannot be had."""
    if not locators.has_guest_agent(disk.locator):
        raise exception.BadRequest(
            'Quiesce required, but server %s has no guest agent channel '
            '(qga_socket).' % server.id)
    if agent_versions.GROUP_QUIESCE not in \
            agent_versions.capabilities(server.host):
        raise exception.BadRequest(
            'Quiesce required, but the agent of the server\'s host is older '
            'than RPC %s and cannot quiesce a snapshot group.'
            % GROUP_QUIESCE_VERSION)


def _quiesce_task(task, server, disk, snaps, requested):
    """Add ``quiesce`` to a group task if the host's agent takes it (RPC
    1.9); else every member is ``crash`` consistent, and says why.
    """
    mode = creation.quiesce_mode(requested, disk)
    if agent_versions.GROUP_QUIESCE in \
            agent_versions.capabilities(server.host):
        task['quiesce'] = mode
    else:
        for snap in snaps:
            snap.consistency = 'crash'
            snap.consistency_reason = (
                'the host\'s agent is older than RPC %s and cannot quiesce '
                'a snapshot group' % GROUP_QUIESCE_VERSION)
    return task


def create(ctxt, server_id, disk_names, name, project_id=None,
           quiesce=None):
    """Snapshot ``disk_names`` (None: every disk) of a server in one pause.

    :param quiesce: ``required``, ``preferred`` or ``off`` (None: as for
        a single snapshot, ``creation.quiesce_mode``); ``required`` is
        refused at once (BadRequest) when the server has no guest agent
        channel or its host's agent is older than RPC 1.9.
    :returns: (group id, operation id, the operation id to send:
        ``conductor.dispatch.send`` casts it if it is still running).
    :raises: NotFound, HostDown, DiskBusy, ChainTooDeep, QuotaExceeded,
        BadRequest, AgentTooOld
    """
    operation_id = operations.new_id()
    group_id = operations.new_id()
    with db.transaction() as s:
        server = db.server_get(s, server_id, project_id)
        hosts.ensure_alive(s, server.host)
        if agent_versions.GROUPS not in \
                agent_versions.capabilities(server.host):
            raise AgentTooOld(host=server.host, version=GROUP_VERSION)
        picked = _pick_disks(server, disk_names)
        disks = []
        for disk in picked:
            # In the order of the ids: see the module docstring.
            disks.append(locking.disk_for_update(s, disk.id))
        server = disks[0].server
        for disk in disks:
            if not operations.may_start_now(s, server, disk):
                # The conductor's own deferred work holds it: a group
                # does not wait (it would hold the other disks meanwhile).
                raise exception.DiskBusy(disk=disk.name, server=server.id,
                                         operation=disk.operation_id)
        if quiesce == 'required':
            _check_quiesce(server, disks[0])
        s.add(models.SnapshotGroup(id=group_id, project_id=server.project_id,
                                   server_id=server.id, name=name,
                                   operation_id=operation_id))
        snaps = []
        for disk in disks:
            snap = models.Snapshot(
                id=operations.new_id(), disk_id=disk.id,
                project_id=server.project_id, parent_id=disk.snapshot_id,
                name=name, status=states.CREATING, image=None,
                group_id=group_id, locator=disk.locator, quiesce=quiesce)
            s.add(snap)
            snaps.append(snap)
        s.flush()
        for disk, snap in zip(disks, snaps):
            limits.check_create(s, server, disk, snapshot_id=snap.id)
        op = operations.record(s, operation_id, 'create_group', server,
                               disks[0], snapshot_id=snaps[0].id)
        for disk in disks[1:]:
            if not locking.lock_disk(s, disk.id, operation_id):
                raise exception.DiskBusy(disk=disk.name, server=server.id,
                                         operation=disk.operation_id)
        task = _quiesce_task(tasks.create_group_task(
            [d.locator for d in disks],
            [creation.layer_name(d, operation_id) for d in disks]),
            server, disks[0], snaps, quiesce)
        operations.lock_disk_and_start(s, op, disks[0], task)
    LOG.info('Snapshot group %(group)s of %(server)s (%(n)d disks): '
             'operation %(op)s sent to %(host)s',
             {'group': group_id, 'server': server_id, 'n': len(disks),
              'op': operation_id, 'host': server.host})
    return group_id, operation_id, operation_id


def members(session, group_id):
    """The group's snapshots, in the order of their disks' ids (the order
    of the task's disks).
    """
    snaps = session.scalars(sa.select(models.Snapshot).where(
        models.Snapshot.group_id == group_id)).all()
    return sorted(snaps, key=lambda snap: snap.disk_id)


def _group_of(session, op):
    snap = session.get(models.Snapshot, op.snapshot_id)
    return members(session, snap.group_id) if snap is not None else []


def apply_created(session, op, result):
    """Every disk of the group moves onto its new layer."""
    results = (result or {}).get('snapshots') or []
    snaps = _group_of(session, op)
    moment = creation.taken_at(op, result or {})
    if len(results) != len(snaps):
        raise exception.LivesnapException(
            'Group operation %s: %d results for %d disks'
            % (op.id, len(results), len(snaps)))
    for snap, res in zip(snaps, results):
        disk = session.get(models.Disk, snap.disk_id, with_for_update=True)
        states.check_snapshot(snap, states.AVAILABLE)
        snap.locator = res.get('snapshot') or snap.locator
        snap.size_bytes = res.get('size_bytes')
        snap.taken_at = moment
        creation.record_consistency(snap, op.task, res)
        disk.locator = res['disk']
        disk.snapshot_id = snap.id
    op.mode = 'online' if result.get('online') else 'offline'
    locking.unlock_others(session, op)


def apply_create_failure(session, op, report):
    """Nothing was pivoted (the transaction is all or none): every member
    is ``error`` and holds no layer.
    """
    for snap in _group_of(session, op):
        states.check_snapshot(snap, states.ERROR)
        snap.locator = None
    locking.unlock_others(session, op)


def get(session, group_id, project_id=None):
    """:raises: NotFound"""
    group = session.get(models.SnapshotGroup, group_id)
    if group is None or (project_id is not None
                         and group.project_id != project_id):
        raise exception.NotFound('Snapshot group %s not found.' % group_id)
    return group


def _with_members(session, group):
    """``(group, [(member, its disk)])``, everything loaded to be read
    after the session ends.
    """
    return group, [(snap, snap.disk) for snap in members(session, group.id)]


def show(group_id, project_id=None):
    """The group and its members, read in a transaction of their own.

    :returns: ``(group, [(snapshot, its disk)])``.
    :raises: NotFound, also for another project's group.
    """
    with db.transaction() as s:
        return _with_members(s, get(s, group_id, project_id))


def project_of(group_id, project_id=None):
    """The project owning the group.

    :raises: NotFound, also for another project's group.
    """
    with db.transaction() as s:
        return get(s, group_id, project_id).project_id


def list_for_server(server_id, project_id=None):
    """The server's groups with their members, oldest first, read in one
    transaction; all of them (the API pages them).

    :returns: ``(the project owning the server, [(group, [(snapshot, its
        disk)])])``.
    :raises: NotFound, also for another project's server.
    """
    with db.transaction() as s:
        server = db.server_get(s, server_id, project_id)
        found = s.scalars(
            sa.select(models.SnapshotGroup)
            .where(models.SnapshotGroup.server_id == server_id)
            .order_by(models.SnapshotGroup.created_at,
                      models.SnapshotGroup.id)).all()
        return server.project_id, [_with_members(s, g) for g in found]


def delete(ctxt, group_id, project_id=None):
    """Delete every member still there by the child-count rule, one
    operation per disk.

    :returns: an iterator of ``(operation id, what to send)``, one per
        member, each member started only when the one before it was
        taken (and sent, by ``conductor.dispatch.send``).
    :raises: NotFound, SnapshotProtected (a member is protected: nothing
        is deleted); DiskBusy, InvalidState, HostDown (for the first
        member refused; the ones before it are under way)
    """
    with db.transaction() as s:
        get(s, group_id, project_id)
        snaps = [snap for snap in members(s, group_id)
                 if snap.status not in (states.DELETED, states.DELETING)]
        for snap in snaps:
            # Refused before any member is touched.
            if snap.protected:
                raise exception.SnapshotProtected(snapshot=snap.id)
        ids = [snap.id for snap in snaps]
    for snap_id in ids:
        yield deletion.delete(ctxt, snap_id, project_id)


def revert(ctxt, group_id, project_id=None):
    """Revert every disk of the group to its member (server shut off),
    one operation per disk.

    :returns: an iterator of ``(operation id, what to send)``, as
        :func:`delete`.
    :raises: NotFound, InvalidState, ServerRunning, DiskBusy, HostDown
    """
    with db.transaction() as s:
        get(s, group_id, project_id)
        snaps = members(s, group_id)
        for snap in snaps:
            if snap.status != states.AVAILABLE:
                raise exception.InvalidState(snapshot=snap.id,
                                             status=snap.status,
                                             action='revert')
        ids = [snap.id for snap in snaps]
    for snap_id in ids:
        yield revert_mod.revert(ctxt, snap_id, project_id)
