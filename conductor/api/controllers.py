"""REST controllers: hosts, servers, snapshots, operations.

Each method takes the request's credentials and its parameters, already
parsed and checked against their schemas by ``conductor.api.app``
(``BODY_SCHEMAS``, ``QUERY_SCHEMAS`` below), asks ``conductor.rbac``
whether the caller may act, calls the one conductor function that does the
work (``conductor.servers``, ``creation``, ``deletion``, ``revert``,
``clones``, ``groups``, ``cancellation``) or reads (``conductor.db.api``),
and renders the result with ``conductor.api.views``.  Nothing here opens a
database session or connection, writes to the database or decides
policy.  An object's project is read before the caller is authorised on
it (an unknown object is 404 for everyone).  A new resource is a class
here, its routes in ``conductor.api.app.ROUTES`` and its instance in
``API.controllers``.  Lookups are filtered to the caller's project unless the
policy grants ``livesnap:all_projects``, so another project's object
answers 404, exactly like one that does not exist.  Snapshot operations
are counted against the owning project's rate limit
(``conductor.api.ratelimit``) after the ownership check, so a 429 never
reveals that a foreign object exists.  What a caller sees of an object's
host (sockets, image paths, host names) depends on the policy's
``livesnap:host_details`` (``conductor.api.views``).
"""

import contextlib

from conductor.api import ratelimit
from conductor.api import schemas
from conductor.api import views
from conductor import cancellation
from conductor import clones
from conductor import creation
from conductor.db import api as db
from conductor import deletion
from conductor import dispatch
from conductor import exception
from conductor import groups
from conductor import rbac
from conductor import revert as revert_policy
from conductor import servers
from conductor import states
from conductor import unregister
from livesnap import context


def _ctxt(creds, req_id):
    return context.make(creds.project_id, creds.roles, req_id)


def _limit(creds, project_id):
    """Count a new snapshot operation against ``project_id``'s rate."""
    if not rbac.check(creds, 'livesnap:operation:unlimited', project_id):
        ratelimit.check(project_id)


class _HostDetails(object):
    """Whether the caller may see host details of a project's objects
    (``livesnap:host_details``), asked once per project per request.
    """

    def __init__(self, creds):
        self.creds = creds
        self._answers = {}

    def __call__(self, project_id):
        if project_id not in self._answers:
            self._answers[project_id] = rbac.check(
                self.creds, 'livesnap:host_details', project_id)
        return self._answers[project_id]


@contextlib.contextmanager
def _host_hidden(creds, project_id):
    """A 503 names the host only to those who may see host details."""
    try:
        yield
    except exception.HostDown:
        if rbac.check(creds, 'livesnap:host_details', project_id):
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
    project_id, status = db.snapshot_project_and_status(snapshot_id, scope)
    if status == states.DELETED and not rbac.check(
            creds, 'livesnap:snapshot:list:include_deleted', project_id):
        raise exception.NotFound('Snapshot %s could not be found.'
                                 % snapshot_id)
    rbac.authorize(creds, rule, project_id)
    if status == states.DELETED:
        raise exception.InvalidState(snapshot=snapshot_id, status=status,
                                     action=action)
    return project_id


def _operation(operation_id, details):
    """``{"operation": …}``; ``details`` is a :class:`_HostDetails`."""
    op, disk_name = db.operation_with_disk_name(operation_id)
    return {'operation': views.operation(op, disk_name,
                                         details(op.project_id))}


class Hosts(object):

    def index(self, creds, req_id, body=None, params=None):
        rbac.authorize(creds, 'livesnap:host:list')
        return 200, {'hosts': [views.host(h, alive)
                               for h, alive in db.hosts_with_liveness()]}

    def domains(self, creds, req_id, host, body=None, params=None):
        """The libvirt domains ``host``'s agent sees, not registered."""
        rbac.authorize(creds, 'livesnap:host:domain:list')
        found = servers.unregistered_domains(_ctxt(creds, req_id), host)
        return 200, {'domains': [views.domain(d) for d in found]}


class Servers(object):

    def index(self, creds, req_id, body=None, params=None):
        rbac.authorize(creds, 'livesnap:server:list')
        servers = db.server_list(rbac.scope(creds))
        details = _HostDetails(creds)
        deleting = unregister.deleting_ids([x.id for x in servers])
        return 200, {'servers': [views.server(x, details(x.project_id),
                                              x.id in deleting)
                                 for x in servers]}

    def show(self, creds, req_id, server_id, body=None, params=None):
        server = db.server_with_disks(server_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:server:get', server.project_id)
        return 200, {'server': views.server(
            server, _HostDetails(creds)(server.project_id),
            bool(unregister.deleting_ids([server.id])))}

    def create(self, creds, req_id, body, params=None):
        spec = body['server']
        if not rbac.check(creds, 'livesnap:server:create',
                          spec['project_id']):
            raise exception.Forbidden(
                rbac.refusal(creds, 'livesnap:server:create'))
        if spec.get('driver') == 'libvirt':
            server = servers.register_domain(_ctxt(creds, req_id), spec)
        else:
            server = servers.register(spec)
        return 201, {'server': views.server(
            server, _HostDetails(creds)(server.project_id))}

    def delete(self, creds, req_id, server_id, body=None, params=None):
        """Unregister a server (``conductor.unregister``): 202 with the
        ``server.delete`` operation while its snapshots are deleted, or
        200 with the files left when only the records go
        (``keep_snapshots``, ``force``, or no snapshot).
        """
        server = db.server_with_disks(server_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:server:delete', server.project_id)
        params = params or {}
        keep = schemas.truthy(params.get('keep_snapshots'))
        force = schemas.truthy(params.get('force'))
        details = _HostDetails(creds)
        ctxt = _ctxt(creds, req_id)
        if force or keep:
            operation_id, files = dispatch.delete_server(
                ctxt, server_id, keep_snapshots=keep, force=force)
        else:
            with _host_hidden(creds, server.project_id):
                operation_id, files = dispatch.delete_server(ctxt, server_id)
        if operation_id is None:
            return 200, {'server': {'id': server_id, 'status': 'deleted',
                                    'files_left': files}}
        answer = _operation(operation_id, details)
        answer['server'] = {'id': server_id, 'status': 'deleting'}
        return 202, answer


class Snapshots(object):

    def index(self, creds, req_id, server_id, body=None, params=None):
        include_deleted = schemas.truthy(
            (params or {}).get('include_deleted'))
        project_id, tree = db.server_snapshot_tree(
            server_id, rbac.scope(creds), include_deleted)
        rbac.authorize(creds, 'livesnap:snapshot:list', project_id)
        if include_deleted:
            rbac.authorize(creds, 'livesnap:snapshot:list:include_deleted',
                           project_id)
        return 200, {'snapshots': [views.snapshot(snap, disk)
                                   for snap, disk in tree]}

    def create(self, creds, req_id, server_id, body, params=None):
        spec = body['snapshot']
        scope = rbac.scope(creds)
        project_id = db.server_owner(server_id, scope)
        rbac.authorize(creds, 'livesnap:snapshot:create', project_id)
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            snapshot_id, operation_id, sent = creation.create(
                ctxt, server_id, spec['disk'], spec['name'],
                project_id=scope, quiesce=spec.get('quiesce'))
            dispatch.send(ctxt, sent)
        snap, disk, op = db.snapshot_and_operation(snapshot_id,
                                                   operation_id)
        return 202, {'snapshot': views.snapshot(snap, disk),
                     'operation': views.operation(
                         op, disk.name, _HostDetails(creds)(op.project_id))}

    def show(self, creds, req_id, snapshot_id, body=None, params=None):
        """A logically deleted snapshot is shown (status ``deleted``) to
        whoever may list it (``include_deleted=true``); to anyone else it
        does not exist.
        """
        snap, disk = db.snapshot_with_disk(snapshot_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:snapshot:get', snap.project_id)
        if snap.status == states.DELETED and not rbac.check(
                creds, 'livesnap:snapshot:list:include_deleted',
                snap.project_id):
            raise exception.NotFound('Snapshot %s could not be found.'
                                     % snapshot_id)
        return 200, {'snapshot': views.snapshot(snap, disk)}

    def delete(self, creds, req_id, snapshot_id, body=None, params=None):
        scope = rbac.scope(creds)
        project_id = _snapshot_project(creds, scope, snapshot_id,
                                       'livesnap:snapshot:delete', 'deletion')
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            operation_id, sent = deletion.delete(ctxt, snapshot_id,
                                                 project_id=scope)
            dispatch.send(ctxt, sent)
        return 202, _operation(operation_id, _HostDetails(creds))

    def revert(self, creds, req_id, snapshot_id, body=None, params=None):
        scope = rbac.scope(creds)
        project_id = _snapshot_project(creds, scope, snapshot_id,
                                       'livesnap:snapshot:revert', 'revert')
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            operation_id, sent = revert_policy.revert(ctxt, snapshot_id,
                                                      project_id=scope)
            dispatch.send(ctxt, sent)
        return 202, _operation(operation_id, _HostDetails(creds))

    def clone(self, creds, req_id, snapshot_id, body=None, params=None):
        scope = rbac.scope(creds)
        project_id = _snapshot_project(creds, scope, snapshot_id,
                                       'livesnap:snapshot:clone', 'clone')
        _limit(creds, project_id)
        spec = body['clone']
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            _, operation_id, sent = clones.clone(
                ctxt, snapshot_id, spec['mode'],
                spec['disk'], server_id=spec.get('server_id'),
                project_id=scope, name=spec.get('name'))
            dispatch.send(ctxt, sent)
        return 202, _operation(operation_id, _HostDetails(creds))


class SnapshotGroups(object):
    """Snapshots of several disks of a server taken in one pause
    (``conductor.groups``).
    """

    def index(self, creds, req_id, server_id, body=None, params=None):
        project_id, found = groups.list_for_server(server_id,
                                                   rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:snapshot_group:get', project_id)
        return 200, {'snapshot_groups': [
            views.snapshot_group(group, members)
            for group, members in found]}

    def create(self, creds, req_id, server_id, body, params=None):
        spec = body['snapshot_group']
        scope = rbac.scope(creds)
        project_id = db.server_owner(server_id, scope)
        rbac.authorize(creds, 'livesnap:snapshot_group:create', project_id)
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            group_id, operation_id, sent = groups.create(
                ctxt, server_id, spec.get('disks'),
                spec['name'], project_id=scope,
                quiesce=spec.get('quiesce'))
            dispatch.send(ctxt, sent)
        out = {'snapshot_group': views.snapshot_group(
            *groups.show(group_id, scope))}
        out.update(_operation(operation_id, _HostDetails(creds)))
        return 202, out

    def show(self, creds, req_id, group_id, body=None, params=None):
        group, members = groups.show(group_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:snapshot_group:get',
                       group.project_id)
        return 200, {'snapshot_group': views.snapshot_group(group, members)}

    def _each(self, creds, req_id, group_id, rule, work):
        scope = rbac.scope(creds)
        project_id = groups.project_of(group_id, scope)
        rbac.authorize(creds, rule, project_id)
        _limit(creds, project_id)
        with _host_hidden(creds, project_id):
            ctxt = _ctxt(creds, req_id)
            ids = []
            for operation_id, sent in work(ctxt, group_id,
                                           project_id=scope):
                dispatch.send(ctxt, sent)
                ids.append(operation_id)
        details = _HostDetails(creds)
        return 202, {'operations': [_operation(i, details)['operation']
                                    for i in ids]}

    def delete(self, creds, req_id, group_id, body=None, params=None):
        return self._each(creds, req_id, group_id,
                          'livesnap:snapshot_group:delete', groups.delete)

    def revert(self, creds, req_id, group_id, body=None, params=None):
        return self._each(creds, req_id, group_id,
                          'livesnap:snapshot_group:revert', groups.revert)


class Operations(object):

    def index(self, creds, req_id, body=None, params=None):
        rbac.authorize(creds, 'livesnap:operation:list')
        server_id = (params or {}).get('server_id') or None
        details = _HostDetails(creds)
        return 200, {'operations': [
            views.operation(op, disk_name, details(op.project_id))
            for op, disk_name in db.operations_with_disk_names(
                rbac.scope(creds), server_id)]}

    def show(self, creds, req_id, operation_id, body=None, params=None):
        op = db.operation_row(operation_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:operation:get', op.project_id)
        return 200, {'operation': views.operation(
            op, op.disk_name, _HostDetails(creds)(op.project_id))}

    def cancel(self, creds, req_id, operation_id, body=None, params=None):
        op = db.operation_row(operation_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:operation:cancel', op.project_id)
        cancellation.cancel(_ctxt(creds, req_id), operation_id)
        return 202, _operation(operation_id, _HostDetails(creds))


def replay(creds, req_id, route, operation_ids):
    """The answer of a write whose conductor recorded ``operation_ids``
    under its ``Idempotency-Key`` but died (or lost the connection) before
    answering (``conductor.idempotency``): what the controller of
    ``route`` answers, with the objects as they are now.

    :param route: (controller, action) of the request.
    """
    details = _HostDetails(creds)
    ops = [_operation(i, details)['operation'] for i in operation_ids]
    if route == ('snapshots', 'create'):
        op = db.operation_row(operation_ids[0])
        snap, disk = db.snapshot_with_disk(op.snapshot_id)
        return 202, {'snapshot': views.snapshot(snap, disk),
                     'operation': ops[0]}
    if route == ('snapshot_groups', 'create'):
        op = db.operation_row(operation_ids[0])
        snap, _ = db.snapshot_with_disk(op.snapshot_id)
        return 202, {'snapshot_group': views.snapshot_group(
            *groups.show(snap.group_id)), 'operation': ops[0]}
    if route[0] == 'snapshot_groups':
        return 202, {'operations': ops}
    if route == ('servers', 'delete'):
        status = {states.SUCCEEDED: 'deleted', states.FAILED: 'active'}.get(
            ops[0]['status'], 'deleting')
        return 202, {'operation': ops[0], 'server': {
            'id': ops[0]['server_id'], 'status': status}}
    return 202, {'operation': ops[0]}


# (controller, action) -> body schema; None means "no body expected".
BODY_SCHEMAS = {
    ('servers', 'create'): schemas.server_create,
    ('snapshots', 'create'): schemas.snapshot_create,
    ('snapshot_groups', 'create'): schemas.snapshot_group_create,
    ('snapshots', 'clone'): schemas.snapshot_clone,
}

# (controller, action) -> query string schema; absent means none allowed.
QUERY_SCHEMAS = {
    ('snapshots', 'index'): schemas.snapshot_index_query,
    ('operations', 'index'): schemas.operation_index_query,
    ('servers', 'delete'): schemas.server_delete_query,
}
