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

import sqlalchemy as sa

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import operations
from livesnap import locators
from livesnap import rpc

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
        ``project_id``, ``host``, ``disks`` (``[{'name', 'path'}]``) and
        what the driver's registration takes besides (the QEMU driver's
        sockets; see ``livesnap.locators.registered_disk``).
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
            **locators.server_columns(spec))
        s.add(server)
        for d in spec['disks']:
            s.add(models.Disk(id=operations.new_id(), server_id=server.id,
                              name=d['name'],
                              locator=locators.registered_disk(spec, d)))
        s.flush()
        s.refresh(server)
        server.disks  # loaded now, to be read after the session ends
    LOG.info('Registered server %(id)s on host %(host)s',
             {'id': server.id, 'host': server.host})
    return server


def _agent_call(host, what, call):
    """Call ``host``'s agent; refuse an agent too old for it.

    :raises: Conflict (the agent serves an RPC API below 1.5), HostDown
        (it does not answer)
    """
    if agent_versions.DESCRIBE_VM not in agent_versions.capabilities(host):
        raise exception.Conflict(
            'The agent of host %s is too old to %s (it needs agent RPC API '
            '1.5); upgrade the agent first.' % (host, what))
    try:
        return call(agent_versions.client())
    except rpc.messaging.RPCVersionCapError:
        raise exception.Conflict(
            'The agent of host %s is too old to %s (it needs agent RPC API '
            '1.5); upgrade the agent first.' % (host, what))
    except rpc.messaging.RemoteError as exc:
        raise exception.Conflict('The agent of host %s could not %s: %s'
                                 % (host, what, exc.value))
    except Exception as exc:
        LOG.warning('Agent of %(host)s did not answer (%(what)s): %(error)s',
                    {'host': host, 'what': what,
                     'error': exc.__class__.__name__})
        raise exception.HostDown(host=host)


def _registered_domains(session, host_name):
    """UUIDs (lower case) of the domains registered on ``host_name``."""
    found = set()
    rows = session.scalars(sa.select(models.Disk).join(
        models.Server, models.Disk.server_id == models.Server.id).where(
        models.Server.host == host_name,
        models.Server.driver == 'libvirt'))
    for d in rows:
        dom = (d.locator or {}).get('domain')
        if dom:
            found.add(str(dom).lower())
    return found


def _alive_host(host_name):
    """:raises: NotFound (no such host), HostDown (not reporting)"""
    with db.transaction() as s:
        if s.get(models.Host, host_name) is None:
            raise exception.NotFound('Host %s could not be found.'
                                     % host_name)
        if not db.host_is_alive(s, host_name):
            raise exception.HostDown(host=host_name)


def unregistered_domains(ctxt, host_name):
    """The VMs ``host_name``'s agent sees (``Driver.list_vms``) that no
    registered server is, by domain UUID.

    :raises: NotFound, HostDown, Conflict (an agent older than 1.5)
    """
    _alive_host(host_name)
    vms = _agent_call(host_name, 'list its domains',
                      lambda agent: agent.list_vms(ctxt, host_name))
    with db.transaction() as s:
        taken = _registered_domains(s, host_name)
    return [vm for vm in vms or []
            if str(vm.get('uuid', '')).lower() not in taken]


def register_domain(ctxt, spec):
    """Record a server that libvirt runs, from its domain's definition:
    one disk per file-backed disk of the domain, named by its target
    (``vda``) and stored with the locator the host's agent made.

    :param spec: the request's ``server`` object with ``driver``
        ``libvirt`` and ``domain`` (a name or UUID on ``host``).
    :returns: the server, with its disks loaded.
    :raises: NotFound (no such host), HostDown, Conflict (the id or the
        domain is taken, or the agent is older than RPC 1.5), BadRequest
        (no such domain, no file disk, or a disk outside the host's image
        directories)
    """
    host_name = spec['host']
    _alive_host(host_name)
    vm = _agent_call(host_name, 'describe domain %s' % spec['domain'],
                     lambda agent: agent.describe_vm(ctxt, host_name,
                                                     spec['domain']))
    if not vm:
        raise exception.BadRequest('Host %s has no domain %s.'
                                   % (host_name, spec['domain']))
    disks = vm.get('disks') or []
    if any((d.get('locator') or {}).get('driver') != 'libvirt'
           for d in disks):
        raise exception.BadRequest('The agent of host %s does not run the '
                                   'libvirt driver.' % host_name)
    if not disks:
        raise exception.BadRequest('Domain %s has no file-backed disk.'
                                   % spec['domain'])
    uuid = str(vm['uuid']).lower()
    with db.transaction() as s:
        check_disk_paths(s, host_name,
                         [{'name': d['name'], 'path': d['locator']['path']}
                          for d in disks])
        if s.get(models.Server, spec['id']) is not None:
            raise exception.Conflict('Server %s already exists.'
                                     % spec['id'])
        if uuid in _registered_domains(s, host_name):
            raise exception.Conflict('Domain %s is already registered on '
                                     'host %s.' % (spec['domain'],
                                                   host_name))
        server = models.Server(
            id=spec['id'], name=spec['name'],
            project_id=spec['project_id'], host=host_name,
            driver='libvirt')
        s.add(server)
        for d in disks:
            s.add(models.Disk(id=operations.new_id(), server_id=server.id,
                              name=d['name'], locator=d['locator']))
        s.flush()
        s.refresh(server)
        server.disks
    LOG.info('Registered server %(id)s on host %(host)s: domain %(dom)s '
             '(%(uuid)s), disks %(disks)s',
             {'id': server.id, 'host': host_name, 'dom': vm.get('name'),
              'uuid': uuid, 'disks': ', '.join(d['name'] for d in disks)})
    return server
