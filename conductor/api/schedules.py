"""REST controllers of snapshot policies (``/v1/policies``) and of a
snapshot's protection (``PATCH /v1/snapshots/{id}``).

Like ``conductor.api.controllers``: the request is already checked against
its schema (``BODY_SCHEMAS``, ``QUERY_SCHEMAS`` below); each method reads
the object's project (``conductor.schedules``, ``conductor.db.api``),
asks ``conductor.rbac`` whether the caller may act, calls
``conductor.schedules`` and renders with ``conductor.api.views``;
nothing here opens a database session or connection.
Lookups are filtered to the caller's project unless the policy grants
``livesnap:all_projects``, so another project's policy answers 404.
"""

from conductor.api import schemas
from conductor.api import views
from conductor.db import api as db
from conductor import exception
from conductor import rbac
from conductor import schedules
from conductor import states


class Policies(object):

    def index(self, creds, req_id, body=None, params=None):
        rbac.authorize(creds, 'livesnap:policy:list')
        found = schedules.list_(rbac.scope(creds),
                                (params or {}).get('server_id'))
        return 200, {'policies': [views.policy(p, last)
                                  for p, last in found]}

    def show(self, creds, req_id, policy_id, body=None, params=None):
        found, last = schedules.get(policy_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:policy:get', found.project_id)
        return 200, {'policy': views.policy(found, last)}

    def create(self, creds, req_id, body, params=None):
        spec = body['policy']
        project_id = db.server_owner(spec['server_id'], rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:policy:create', project_id)
        found = schedules.create(spec['server_id'], spec)
        return 201, {'policy': views.policy(found)}

    def update(self, creds, req_id, policy_id, body, params=None):
        found, _ = schedules.get(policy_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:policy:update', found.project_id)
        found, last = schedules.update(policy_id, body['policy'])
        return 200, {'policy': views.policy(found, last)}

    def delete(self, creds, req_id, policy_id, body=None, params=None):
        """200 with the policy as it was; its snapshots stay."""
        found, _ = schedules.get(policy_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:policy:delete', found.project_id)
        found, last = schedules.delete(policy_id)
        shown = views.policy(found, last)
        return 200, {'policy': dict(shown, enabled=False, next_run=None)}

    def runs(self, creds, req_id, policy_id, body=None, params=None):
        found, _ = schedules.get(policy_id, rbac.scope(creds))
        rbac.authorize(creds, 'livesnap:policy:run:list', found.project_id)
        details = rbac.check(creds, 'livesnap:host_details',
                             found.project_id)
        rows, host = schedules.runs(policy_id)
        return 200, {'runs': [views.policy_run(r, details, host)
                              for r in rows]}


class SnapshotProtection(object):
    """``PATCH /v1/snapshots/{id}`` ``{"snapshot": {"protected": bool}}``."""

    def update(self, creds, req_id, snapshot_id, body, params=None):
        snap, _ = db.snapshot_with_disk(snapshot_id, rbac.scope(creds))
        if snap.status == states.DELETED and not rbac.check(
                creds, 'livesnap:snapshot:list:include_deleted',
                snap.project_id):
            raise exception.NotFound('Snapshot %s could not be found.'
                                     % snapshot_id)
        rbac.authorize(creds, 'livesnap:snapshot:update', snap.project_id)
        snap, disk = schedules.protect(
            snapshot_id, body['snapshot']['protected'])
        return 200, {'snapshot': views.snapshot(snap, disk)}


# (controller, action) -> body schema.
BODY_SCHEMAS = {
    ('policies', 'create'): schemas.policy_create,
    ('policies', 'update'): schemas.policy_update,
    ('snapshot_protection', 'update'): schemas.snapshot_update,
}

# (controller, action) -> query string schema.
QUERY_SCHEMAS = {
    ('policies', 'index'): schemas.policy_index_query,
}
