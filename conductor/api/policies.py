"""REST controllers of snapshot policies (``/v1/policies``) and of a
snapshot's protection (``PATCH /v1/snapshots/{id}``).

Like ``conductor.api.controllers``: the request is already checked against
its schema (``BODY_SCHEMAS``, ``QUERY_SCHEMAS`` below); each method reads
the object's project (``conductor.snapshot_policies``, ``conductor.db.api``),
asks ``conductor.policy`` whether the caller may act, calls
``conductor.snapshot_policies`` and renders with ``conductor.api.views``;
nothing here opens a database session or connection.
Lookups are filtered to the caller's project unless the policy grants
``livesnap:all_projects``, so another project's policy answers 404.
"""

from conductor.api import schemas
from conductor.api import views
from conductor.db import api as db
from conductor import exception
from conductor import policy
from conductor import snapshot_policies
from conductor import states


class Policies(object):

    def index(self, creds, req_id, body=None, params=None):
        policy.authorize(creds, 'livesnap:policy:list')
        found = snapshot_policies.list_(policy.scope(creds),
                                        (params or {}).get('server_id'))
        return 200, {'policies': [views.policy(p, last)
                                  for p, last in found]}

    def show(self, creds, req_id, policy_id, body=None, params=None):
        found, last = snapshot_policies.get(policy_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:policy:get', found.project_id)
        return 200, {'policy': views.policy(found, last)}

    def create(self, creds, req_id, body, params=None):
        spec = body['policy']
        project_id = db.server_owner(spec['server_id'], policy.scope(creds))
        policy.authorize(creds, 'livesnap:policy:create', project_id)
        found = snapshot_policies.create(spec['server_id'], spec)
        return 201, {'policy': views.policy(found)}

    def update(self, creds, req_id, policy_id, body, params=None):
        found, _ = snapshot_policies.get(policy_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:policy:update', found.project_id)
        found, last = snapshot_policies.update(policy_id, body['policy'])
        return 200, {'policy': views.policy(found, last)}

    def delete(self, creds, req_id, policy_id, body=None, params=None):
        """200 with the policy as it was; its snapshots stay."""
        found, _ = snapshot_policies.get(policy_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:policy:delete', found.project_id)
        found, last = snapshot_policies.delete(policy_id)
        shown = views.policy(found, last)
        return 200, {'policy': dict(shown, enabled=False, next_run=None)}

    def runs(self, creds, req_id, policy_id, body=None, params=None):
        found, _ = snapshot_policies.get(policy_id, policy.scope(creds))
        policy.authorize(creds, 'livesnap:policy:run:list', found.project_id)
        details = policy.check(creds, 'livesnap:host_details',
                               found.project_id)
        rows, host = snapshot_policies.runs(policy_id)
        return 200, {'runs': [views.policy_run(r, details, host)
                              for r in rows]}


class SnapshotProtection(object):
    """``PATCH /v1/snapshots/{id}`` ``{"snapshot": {"protected": bool}}``."""

    def update(self, creds, req_id, snapshot_id, body, params=None):
        snap, _ = db.snapshot_with_disk(snapshot_id, policy.scope(creds))
        if snap.status == states.DELETED and not policy.check(
                creds, 'livesnap:snapshot:list:include_deleted',
                snap.project_id):
            raise exception.NotFound('Snapshot %s could not be found.'
                                     % snapshot_id)
        policy.authorize(creds, 'livesnap:snapshot:update', snap.project_id)
        snap, disk = snapshot_policies.protect(
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
