"""REST controllers of snapshot policies (``/v1/policies``) and of a
snapshot's protection (``PATCH /v1/snapshots/{id}``).

Like ``conductor.api.controllers``: the request is already checked against
its schema; each method asks ``conductor.policy`` whether the caller may
act and filters lookups to the caller's project unless the policy grants
``livesnap:all_projects`` (another project's policy answers 404).  What the
policies do is ``conductor.scheduler``'s; the slots are ``conductor.slots``'.
"""

import logging

from oslo_config import cfg
import sqlalchemy as sa

from conductor.api import schemas
from conductor.api import views
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import operations
from conductor import policy
from conductor import scheduler
from conductor import slots
from conductor import states

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: Runs shown by ``GET /v1/policies/{id}/runs``, newest first.
MAX_RUNS = 200


def policy_get(session, policy_id, project_id=None):
    """:raises: NotFound if it does not exist or is another project's."""
    found = session.get(models.SnapshotPolicy, policy_id)
    if found is None or (project_id is not None
                         and found.project_id != project_id):
        raise exception.NotFound('Policy %s could not be found.' % policy_id)
    return found


def _last_outcomes(session, policy_ids):
    """``{policy id: outcome of its newest run}``."""
    if not policy_ids:
        return {}
    newest = (sa.select(models.PolicyRun.policy_id,
                        sa.func.max(models.PolicyRun.scheduled_for)
                        .label('slot'))
              .where(models.PolicyRun.policy_id.in_(policy_ids))
              .group_by(models.PolicyRun.policy_id).subquery())
    rows = session.execute(
        sa.select(models.PolicyRun.policy_id, models.PolicyRun.outcome)
        .join(newest, sa.and_(
            newest.c.policy_id == models.PolicyRun.policy_id,
            newest.c.slot == models.PolicyRun.scheduled_for))).all()
    out = {}
    # Several disks per slot: the worst outcome stands for the slot.
    rank = {'failed': 4, 'skipped': 3, 'pending': 2, 'created': 1}
    for policy_id, outcome in rows:
        if rank.get(outcome, 0) > rank.get(out.get(policy_id), 0):
            out[policy_id] = outcome
    return out


def _show(session, found):
    return views.policy(found, _last_outcomes(session, [found.id]).get(
        found.id))


def _check_schedule(spec):
    """:raises: BadRequest for an interval below the minimum, a bad cron
    expression or an unknown time zone."""
    if spec.get('interval') is not None and \
            spec['interval'] < CONF.conductor.policy_min_interval:
        raise exception.BadRequest(
            'The interval must be at least %d seconds.'
            % CONF.conductor.policy_min_interval)
    if spec.get('cron') is not None:
        slots.check_cron(spec['cron'])
    if spec.get('timezone') is not None:
        slots.check_timezone(spec['timezone'])


def _check_disks(server, names):
    if names is None:
        return
    have = {d.name for d in server.disks}
    for name in names:
        if name not in have:
            raise exception.BadRequest('Server %s has no disk named %s.'
                                       % (server.id, name))


def _apply(found, spec):
    """Copy the fields of a validated body onto the policy."""
    for field in ('name', 'timezone', 'enabled'):
        if field in spec:
            setattr(found, field, spec[field])
    if 'disks' in spec:
        found.disks = spec['disks']
    if spec.get('interval') is not None:
        found.interval, found.cron = spec['interval'], None
    if spec.get('cron') is not None:
        found.interval, found.cron = None, spec['cron']
    if 'retention' in spec:
        for name in scheduler.rules(found):
            setattr(found, name, spec['retention'].get(name, 0))


class Policies(object):

    def index(self, creds, req_id, body=None, params=None):
        policy.authorize(creds, 'livesnap:policy:list')
        scope = policy.scope(creds)
        server_id = (params or {}).get('server_id')
        with db.transaction() as s:
            query = sa.select(models.SnapshotPolicy).order_by(
                models.SnapshotPolicy.created_at, models.SnapshotPolicy.id)
            if scope is not None:
                query = query.where(
                    models.SnapshotPolicy.project_id == scope)
            if server_id:
                query = query.where(
                    models.SnapshotPolicy.server_id == server_id)
            found = list(s.scalars(query))
            last = _last_outcomes(s, [p.id for p in found])
            return 200, {'policies': [views.policy(p, last.get(p.id))
                                      for p in found]}

    def show(self, creds, req_id, policy_id, body=None, params=None):
        with db.transaction() as s:
            found = policy_get(s, policy_id, policy.scope(creds))
            policy.authorize(creds, 'livesnap:policy:get', found.project_id)
            return 200, {'policy': _show(s, found)}

    def create(self, creds, req_id, body, params=None):
        spec = body['policy']
        _check_schedule(spec)
        with db.transaction() as s:
            server = db.server_get(s, spec['server_id'], policy.scope(creds))
            policy.authorize(creds, 'livesnap:policy:create',
                             server.project_id)
            _check_disks(server, spec.get('disks'))
            quota = CONF.conductor.policy_quota
            if quota >= 0:
                db.lock_project(s, server.project_id)
                used = s.scalar(
                    sa.select(sa.func.count())
                    .select_from(models.SnapshotPolicy)
                    .where(models.SnapshotPolicy.project_id ==
                           server.project_id))
                if used + 1 > quota:
                    raise exception.QuotaExceeded(
                        'Project %s has %d snapshot policies, its quota is '
                        '%d.' % (server.project_id, used, quota))
            now = scheduler._now()
            found = models.SnapshotPolicy(
                id=operations.new_id(), project_id=server.project_id,
                server_id=server.id, timezone='UTC', enabled=True,
                created_at=now, updated_at=now)
            _apply(found, spec)
            found.next_run = (scheduler.first_run(found, now)
                              if found.enabled else None)
            s.add(found)
            s.flush()
            LOG.info('Policy %(policy)s on server %(server)s: next run '
                     '%(next)s', {'policy': found.id, 'server': server.id,
                                  'next': found.next_run})
            return 201, {'policy': _show(s, found)}

    def update(self, creds, req_id, policy_id, body, params=None):
        spec = body['policy']
        _check_schedule(spec)
        with db.transaction() as s:
            found = policy_get(s, policy_id, policy.scope(creds))
            policy.authorize(creds, 'livesnap:policy:update',
                             found.project_id)
            # Serialise with a conductor claiming its slot.
            found = s.get(models.SnapshotPolicy, policy_id,
                          with_for_update=True, populate_existing=True)
            _check_disks(s.get(models.Server, found.server_id),
                         spec.get('disks'))
            was = (found.interval, found.cron, found.timezone, found.enabled)
            _apply(found, spec)
            if not found.enabled:
                found.next_run = None
            elif (found.interval, found.cron, found.timezone,
                  found.enabled) != was or found.next_run is None:
                found.next_run = scheduler.first_run(found)
            s.flush()
            return 200, {'policy': _show(s, found)}

    def delete(self, creds, req_id, policy_id, body=None, params=None):
        """The policy and its runs go; its snapshots stay, as the
        tenant's own (``policy_id`` null)."""
        with db.transaction() as s:
            found = policy_get(s, policy_id, policy.scope(creds))
            policy.authorize(creds, 'livesnap:policy:delete',
                             found.project_id)
            found = s.get(models.SnapshotPolicy, policy_id,
                          with_for_update=True, populate_existing=True)
            shown = _show(s, found)
            s.execute(sa.update(models.Snapshot)
                      .where(models.Snapshot.policy_id == policy_id)
                      .values(policy_id=None)
                      .execution_options(synchronize_session=False))
            s.execute(sa.delete(models.PolicyRun)
                      .where(models.PolicyRun.policy_id == policy_id)
                      .execution_options(synchronize_session=False))
            s.delete(found)
            LOG.info('Deleted policy %(policy)s', {'policy': policy_id})
            return 200, {'policy': dict(shown, enabled=False, next_run=None)}

    def runs(self, creds, req_id, policy_id, body=None, params=None):
        with db.transaction() as s:
            found = policy_get(s, policy_id, policy.scope(creds))
            policy.authorize(creds, 'livesnap:policy:run:list',
                             found.project_id)
            details = policy.check(creds, 'livesnap:host_details',
                                   found.project_id)
            server = s.get(models.Server, found.server_id)
            rows = s.scalars(
                sa.select(models.PolicyRun)
                .where(models.PolicyRun.policy_id == policy_id)
                .order_by(models.PolicyRun.scheduled_for.desc(),
                          models.PolicyRun.disk_name)
                .limit(MAX_RUNS))
            return 200, {'runs': [
                views.policy_run(r, details, server.host if server else None)
                for r in rows]}


class SnapshotProtection(object):
    """``PATCH /v1/snapshots/{id}`` ``{"snapshot": {"protected": bool}}``."""

    def update(self, creds, req_id, snapshot_id, body, params=None):
        wanted = body['snapshot']['protected']
        scope = policy.scope(creds)
        with db.transaction() as s:
            snap = db.snapshot_get(s, snapshot_id, scope,
                                   include_deleted=True)
            if snap.status == states.DELETED and not policy.check(
                    creds, 'livesnap:snapshot:list:include_deleted',
                    snap.project_id):
                raise exception.NotFound('Snapshot %s could not be found.'
                                         % snapshot_id)
            policy.authorize(creds, 'livesnap:snapshot:update',
                             snap.project_id)
            # Under the disk's row lock, like a delete: a delete either
            # came first (the snapshot is deleting: refused here) or sees
            # the pin.
            db.disk_for_update(s, snap.disk_id)
            snap = db.snapshot_get(s, snapshot_id, scope,
                                   include_deleted=True)
            if wanted and snap.status not in (states.CREATING,
                                              states.AVAILABLE):
                raise exception.InvalidState(snapshot=snap.id,
                                             status=snap.status,
                                             action='protecting it')
            if bool(snap.protected) != wanted:
                snap.protected = wanted
                LOG.info('Snapshot %(snap)s %(what)s',
                         {'snap': snap.id, 'what': 'protected' if wanted
                          else 'unprotected'})
            s.flush()
            return 200, {'snapshot': views.snapshot(snap, snap.disk)}


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
