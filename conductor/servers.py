"""Server registration: an administrator tells livesnap about a server.

A server lives on one host and has named disks, each with its active
image.  Registration checks what can be checked before any task runs: the
disk names are unique, and every image lies inside the image directories
the host's agent reported in its heartbeats (the agent enforces the same
rule on every task, resolving symlinks on its own file system; checking
here too gives the administrator a clear 400 now instead of a failed
operation later).
"""

import logging
import os

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import operations

LOG = logging.getLogger(__name__)


def check_disk_paths(session, host_name, disks):
    """Refuse disk paths that are not normalised or that lie outside the
    image directories ``host_name``'s agent reported (no check if it has
    reported none yet).

    :param disks: ``[{'name', 'path'}]``.
    :raises: BadRequest
    """
    for d in disks:
        if '/../' in d['path'] + '/' or '/./' in d['path'] + '/':
            raise exception.BadRequest('Disk path %s must be normalised.'
                                       % d['path'])
    host = session.get(models.Host, host_name)
    dirs = (host.info or {}).get('image_dirs') if host is not None else None
    if not dirs:
        return
    for d in disks:
        path = os.path.normpath(d['path'])
        if not any(path.startswith(os.path.normpath(x).rstrip('/') + '/')
                   for x in dirs):
            raise exception.BadRequest(
                'Disk path %s is outside the image directories of host %s '
                '(%s).' % (d['path'], host_name, ', '.join(dirs)))


def register(spec):
    """Record a server and its disks.

    :param spec: the request's ``server`` object, checked against
        ``conductor.api.schemas.server_create``: ``id``, ``name``,
        ``project_id``, ``host``, optional ``qmp_socket`` and ``qga_socket``,
        and ``disks``
        (``[{'name', 'path'}]``).
    :returns: the server, with its disks loaded (detached from the
        session, ready to render).
    :raises: BadRequest (disk names not unique, a path not normalised or
        outside the host's image directories), Conflict (the id is taken)
    """
    names = [d['name'] for d in spec['disks']]
    if len(set(names)) != len(names):
        raise exception.BadRequest('Disk names must be unique.')
    with db.transaction() as s:
        check_disk_paths(s, spec['host'], spec['disks'])
        if s.get(models.Server, spec['id']) is not None:
            raise exception.Conflict('Server %s already exists.'
                                     % spec['id'])
        server = models.Server(
            id=spec['id'], name=spec['name'],
            project_id=spec['project_id'], host=spec['host'],
            qmp_socket=spec.get('qmp_socket'))
        s.add(server)
        for d in spec['disks']:
            locator = {'driver': 'qemu', 'qmp_socket': spec.get('qmp_socket'),
                       'path': d['path']}
            if spec.get('qga_socket'):
                # the guest agent's channel, for quiesce
                locator['qga_socket'] = spec['qga_socket']
            s.add(models.Disk(id=operations.new_id(), server_id=server.id,
                              name=d['name'], locator=locator))
        s.flush()
        s.refresh(server)
        server.disks  # loaded now, to be read after the session ends
    LOG.info('Registered server %(id)s on host %(host)s',
             {'id': server.id, 'host': server.host})
    return server
