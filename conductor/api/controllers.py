"""REST controllers: servers, snapshots, operations.

Each method takes the request's credentials and its parameters, already
checked against their schemas by ``conductor.api.app``, asks
``conductor.policy`` whether the caller may act, and calls the modules
that do the work.  Lookups are filtered to the caller's project unless the
policy grants ``livesnap:all_projects``, so another project's object
answers 404, exactly like one that does not exist.  Snapshot operations
are counted against the owning project's rate limit
(``conductor.api.ratelimit``) after the ownership check, so a 429 never
reveals that a foreign object exists.  What a caller sees of an object's
host (sockets, image paths, host names) depends on the policy's
``livesnap:host_details`` (``conductor.api.views``).
"""

import contextlib
import logging
import os

from conductor.api import ratelimit
from conductor.api import schemas
from conductor.api import views
from conductor.db import api as db
from conductor.db import models
from conductor.db import reads
from conductor import cancellation
from conductor import deletion
from conductor import exception
from conductor import policy
from conductor import revert as revert_policy
from conductor import snapshots as snapshot_policy
from livesnap import context

LOG = logging.getLogger(__name__)


def _ctxt(creds, req_id):
    return context.make(creds.project_id, creds.roles, req_id)


def _limit(creds, project_id):
    """Count a new snapshot operation against ``project_id``'s rate."""
    if not policy.check(creds, 'livesnap:operation:unlimited', project_id):
        ratelimit.check(project_id)


class _HostDetails(object):
    """Whether the caller may see host details of a project's objects
    (``livesnap:host_details``), asked once per project per request."""

    def __init__(self, creds):
        self.creds = creds
        self._answers = {}

    def __call__(self, project_id):
        if project_id not in self._answers:
            self._answers[project_id] = policy.check(
                self.creds, 'livesnap:host_details', project_id)
        return self._answers[project_id]


@contextlib.contextmanager
def _host_hidden(creds, project_id):
    """A 503 names the host only to those who may see host details."""
    try:
        yield
    except exception.HostDown:
        if policy.check(creds, 'livesnap:host_details', project_id):
            raise
        raise exception.HostDown(
            'The agent of the server\'s host is not reporting; no work can '
            'be sent to it now. Try again later.')


def _snapshot_project(creds, scope, snapshot_id, rule, action):
    """Authorize ``rule`` on a snapshot; return its project.

    A logically deleted snapshot its owner can see (``GET`` shows it) is
    answered 409 ``invalid_state`` once the action is allowed, not 404: it
    exists, and the conductor finishes it by itself.

    :raises: NotFound, Forbidden, InvalidState
    """
    with db.transaction() as s:
        snap = db.snapshot_get(s, snapshot_id, scope, include_deleted=True)
        project_id, status = snap.project_id, snap.status
    if status == 'deleted' and not policy.check(
            creds, 'livesnap:snapshot:list:include_deleted', project_id):
        raise exception.NotFound('Snapshot %s could not be found.'
                                 % snapshot_id)
    policy.authorize(creds, rule, project_id)
    if status == 'deleted':
        raise exception.InvalidState(snapshot=snapshot_id, status=status,
                                     action=action)
    return project_id


def _check_disk_paths(session, host_name, disks):
    """Refuse disk paths outside the image dirs the host's agent reported.

    The agent enforces the same rule on every task (resolving symlinks on
    its own file system); checking here too gives the admin a clear 400 at
    registration instead of a failed operation later.
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


def _disk_names(session, ops):
    ids = {op.disk_id for op in ops}
    if not ids:
        return {}
    rows = session.query(models.Disk).filter(models.Disk.id.in_(ids)).all()
    return {d.id: d.name for d in rows}


class Hosts(object):

    def index(self, creds, req_id, body=None, params=None):
        policy.authorize(creds, 'livesnap:host:list')
        with db.transaction() as s:
            hosts = s.query(models.Host).order_by(models.Host.name).all()
            return 200, {'hosts': [
                views.host(h, db.host_is_alive(s, h.name)) for h in hosts]}


class Servers(object):

    def index(self, creds, req_id, body=None, params=None):
        policy.authorize(creds, 'livesnap:server:list')
        scope = policy.scope(creds)
        with db.transaction() as s:
            query = s.query(models.Server).order_by(models.Server.created_at,
                                                    models.Server.id)
            if scope is not None:
                query = query.filter(models.Server.project_id == scope)
            details = _HostDetails(creds)
            return 200, {'servers': [views.server(x, details(x.project_id))
                                     for x in query.all()]}

    def show(self, creds, req_id, server_id, body=None, params=None):
        with db.transaction() as s:
            server = db.server_get(s, server_id, policy.scope(creds))
            policy.authorize(creds, 'livesnap:server:get', server.project_id)
            return 200, {'server': views.server(
                server, _HostDetails(creds)(server.project_id))}

    def create(self, creds, req_id, body, params=None):
        spec = body['server']
        if not policy.check(creds, 'livesnap:server:create',
                            spec['project_id']):
            raise exception.Forbidden(
                policy.refusal(creds, 'livesnap:server:create'))
        names = [d['name'] for d in spec['disks']]
        if len(set(names)) != len(names):
            raise exception.BadRequest('Disk names must be unique.')
        with db.transaction() as s:
            _check_disk_paths(s, spec['host'], spec['disks'])
            if s.get(models.Server, spec['id']) is not None:
                raise exception.Conflict('Server %s already exists.'
                                         % spec['id'])
            server = models.Server(
                id=spec['id'], name=spec['name'],
                project_id=spec['project_id'], host=spec['host'],
                qmp_socket=spec.get('qmp_socket'))
            s.add(server)
            for d in spec['disks']:
                s.add(models.Disk(id=snapshot_policy.operations.new_id(),
                                  server_id=server.id, name=d['name'],
                                  locator={
                                      'driver': 'qemu',
                                      'qmp_socket': spec.get('qmp_socket'),
                                      'path': d['path']}))
            s.flush()
            s.refresh(server)
            LOG.info('Registered server %(id)s on host %(host)s',
                     {'id': server.id, 'host': server.host})
            return 201, {'server': views.server(
                server, _HostDetails(creds)(server.project_id))}


class Snapshots(object):

    def index(self, creds, req_id, server_id, body=None, params=None):
        include_deleted = schemas.truthy(
            (params or {}).get('include_deleted'))
        with db.reader() as conn:
            project_id = reads.server_project(conn, server_id,
                                              policy.scope(creds))
            policy.authorize(creds, 'livesnap:snapshot:list', project_id)
            if include_deleted:
                policy.authorize(creds,
                                 'livesnap:snapshot:list:include_deleted',
                                 project_id)
            tree = reads.snapshot_tree(conn, server_id, include_deleted)
        return 200, {'snapshots': [views.snapshot(snap, disk)
                                   for snap, disk in tree]}

    def create(self, creds, req_id, server_id, body, params=None):
        spec = body['snapshot']
        scope = policy.scope(creds)
        with db.transaction() as s:
            project_id = db.server_get(s, server_id, scope).project_id
        policy.authorize(creds, 'livesnap:snapshot:create', project_id)
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            snapshot_id, operation_id = snapshot_policy.create(
                _ctxt(creds, req_id), server_id, spec['disk'], spec['name'],
                project_id=scope)
        with db.transaction() as s:
            snap = s.get(models.Snapshot, snapshot_id)
            op = s.get(models.Operation, operation_id)
            return 202, {'snapshot': views.snapshot(snap, snap.disk),
                         'operation': views.operation(
                             op, snap.disk.name,
                             _HostDetails(creds)(op.project_id))}

    def show(self, creds, req_id, snapshot_id, body=None, params=None):
        """A logically deleted snapshot is shown (status ``deleted``) to
        whoever may list it (``include_deleted=true``); to anyone else it
        does not exist."""
        scope = policy.scope(creds)
        with db.transaction() as s:
            snap = db.snapshot_get(s, snapshot_id, scope,
                                   include_deleted=True)
            policy.authorize(creds, 'livesnap:snapshot:get', snap.project_id)
            if snap.status == 'deleted' and not policy.check(
                    creds, 'livesnap:snapshot:list:include_deleted',
                    snap.project_id):
                raise exception.NotFound('Snapshot %s could not be found.'
                                         % snapshot_id)
            return 200, {'snapshot': views.snapshot(snap, snap.disk)}

    def delete(self, creds, req_id, snapshot_id, body=None, params=None):
        scope = policy.scope(creds)
        project_id = _snapshot_project(creds, scope, snapshot_id,
                                       'livesnap:snapshot:delete', 'deletion')
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            operation_id = deletion.delete(_ctxt(creds, req_id), snapshot_id,
                                           project_id=scope)
        return 202, _operation(operation_id, _HostDetails(creds))

    def revert(self, creds, req_id, snapshot_id, body=None, params=None):
        scope = policy.scope(creds)
        project_id = _snapshot_project(creds, scope, snapshot_id,
                                       'livesnap:snapshot:revert', 'revert')
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            operation_id = revert_policy.revert(_ctxt(creds, req_id),
                                                snapshot_id,
                                                project_id=scope)
        return 202, _operation(operation_id, _HostDetails(creds))


def _operation(operation_id, details):
    """``{"operation": …}``; ``details`` is a :class:`_HostDetails`."""
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        names = _disk_names(s, [op])
        return {'operation': views.operation(op, names.get(op.disk_id),
                                             details(op.project_id))}


class Operations(object):

    def index(self, creds, req_id, body=None, params=None):
        policy.authorize(creds, 'livesnap:operation:list')
        server_id = (params or {}).get('server_id') or None
        with db.transaction() as s:
            ops = db.operation_list(s, policy.scope(creds), server_id)
            names = _disk_names(s, ops)
            details = _HostDetails(creds)
            return 200, {'operations': [
                views.operation(op, names.get(op.disk_id),
                                details(op.project_id)) for op in ops]}

    def show(self, creds, req_id, operation_id, body=None, params=None):
        with db.reader() as conn:
            op = reads.operation(conn, operation_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:operation:get', op.project_id)
        return 200, {'operation': views.operation(
            op, op.disk_name, _HostDetails(creds)(op.project_id))}

    def cancel(self, creds, req_id, operation_id, body=None, params=None):
        with db.reader() as conn:
            op = reads.operation(conn, operation_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:operation:cancel', op.project_id)
        cancellation.cancel(_ctxt(creds, req_id), operation_id)
        return 202, _operation(operation_id, _HostDetails(creds))


# (controller, action) -> body schema; None means "no body expected".
BODY_SCHEMAS = {
    ('servers', 'create'): schemas.server_create,
    ('snapshots', 'create'): schemas.snapshot_create,
}

# (controller, action) -> query string schema; absent means none allowed.
QUERY_SCHEMAS = {
    ('snapshots', 'index'): schemas.snapshot_index_query,
    ('operations', 'index'): schemas.operation_index_query,
}
