"""New disks from a snapshot (``POST /v1/snapshots/{id}/clone``).

The snapshot's host's agent makes a new image beside the snapshot's
layer: ``flat``, a full copy with no backing file (``qemu-img convert``,
with progress), or ``linked``, a new qcow2 layer on the snapshot's.  Its
report registers the new image as a disk of the target server (the
snapshot's own server when none is given), which must belong to the same
project and run on the same host.

The operation holds the snapshot's disk's lock while the agent works, so
the snapshot cannot go meanwhile.  A linked clone is one of the
snapshot's children (``conductor.tree``): the snapshot is then never
deleted physically nor merged (its layer is not the clone disk's to
change); its deletion is logical until the clone disk goes.
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

MODES = ('flat', 'linked')


def clone(ctxt, snapshot_id, mode, disk_name, server_id=None,
          project_id=None, name=None):
    """Start making a new disk ``disk_name`` of ``server_id`` (None: the
    snapshot's own server) from an available snapshot.

    :param project_id: the caller's project, or None for an admin.
    :returns: (the new disk's id, the operation's id, the operation id to
        send: ``conductor.dispatch.send`` casts it if it is still
        running).
    :raises: NotFound (the snapshot, or the target server, is not the
        caller's; an admin's target must be of the snapshot's project),
        InvalidState, CloneNotPossible (another host, a disk of that
        name, an agent older than RPC 1.8), DiskBusy, HostDown, BadRequest
    """
    if mode not in MODES:
        raise exception.BadRequest('mode must be one of %s.'
                                   % ', '.join(MODES))
    operation_id = operations.new_id()
    disk_id = operations.new_id()
    with db.transaction() as s:
        snap, disk, server, free = creation.claim_snapshot(
            s, snapshot_id, project_id)
        if snap.status != states.AVAILABLE:
            raise exception.InvalidState(snapshot=snap.id, status=snap.status,
                                         action='clone')
        target = server
        if server_id is not None and server_id != server.id:
            target = db.server_get(s, server_id, project_id)
            if target.project_id != snap.project_id:
                raise exception.NotFound('Server %s could not be found.'
                                         % server_id)
        if target.host != server.host:
            raise exception.CloneNotPossible(
                reason='server %s runs on host %s, the snapshot is on %s; '
                       'clones are made on the snapshot\'s host only'
                       % (target.id, target.host, server.host))
        if any(d.name == disk_name for d in target.disks):
            raise exception.CloneNotPossible(
                reason='server %s already has a disk named %s'
                       % (target.id, disk_name))
        hosts.ensure_alive(s, server.host)
        if agent_versions.CLONE not in \
                agent_versions.capabilities(server.host):
            raise exception.CloneNotPossible(
                reason='the agent of host %s is older than RPC 1.8; '
                       'upgrade it first' % server.host)
        if not free:
            raise exception.DiskBusy(disk=disk.name, server=server.id,
                                     operation=disk.operation_id)
        op = operations.record(s, operation_id, 'clone', server, disk,
                               snapshot_id=snap.id, mode=mode)
        op.target = {'server_id': target.id, 'disk': disk_name,
                     'disk_id': disk_id, 'mode': mode, 'name': name}
        operations.lock_disk_and_start(s, op, disk, tasks.clone_task(
            mode, disk.locator, snap.locator,
            creation.layer_name(models.Disk(id=disk_id), operation_id)))
    LOG.info('Clone (%(mode)s) of snapshot %(snap)s into %(server)s/'
             '%(disk)s: operation %(op)s sent to %(host)s',
             {'mode': mode, 'snap': snapshot_id, 'server': target.id,
              'disk': disk_name, 'op': operation_id, 'host': server.host})
    return disk_id, operation_id, operation_id


def apply_cloned(session, op, result):
    """Register the new image as a disk of the target server.  Should a
    disk of that name have appeared meanwhile, the new one is named
    ``<name>-<operation id's first 8 characters>``.
    """
    target = op.target or {}
    server = session.get(models.Server, target.get('server_id'))
    if server is None:
        # The target was unregistered meanwhile: keep the operation's
        # outcome; the image is left for the audit to report.
        LOG.warning('Clone %(op)s finished but server %(server)s is gone; '
                    'its image %(image)s is not registered',
                    {'op': op.id, 'server': target.get('server_id'),
                     'image': (result.get('image') or {}).get('path')})
        return
    name = target['disk']
    if any(d.name == name for d in server.disks):
        name = '%s-%s' % (name, op.id[:8])
    siblings = [d.locator for d in server.disks]
    disk = models.Disk(id=target['disk_id'], server_id=server.id,
                       name=name, snapshot_id=None,
                       clone_of=op.snapshot_id, clone_mode=target['mode'])
    # The agent made an image locator; the driver's rule makes it a disk
    # of the target server (QEMU: reached on the server's QMP socket).
    disk.locator = locators.cloned_disk(result['image'], siblings)
    session.add(disk)


def apply_clone_failure(session, op, report):
    """Nothing to undo: the new disk is registered only on success."""
