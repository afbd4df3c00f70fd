"""Snapshot policies as tenants manage them: create, change, delete,
read with their last outcome and run history; and protecting a snapshot.

The REST controllers (``conductor.api.schedules``) authorise and call these;
what a policy does when its slots come is ``conductor.schedule_runner``'s, when
they come ``conductor.slots``', what it keeps ``conductor.retention``'s.
"""

import logging

from oslo_config import cfg
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import locking
from conductor import operations
from conductor import schedule_runner
from conductor import slots
from conductor import states

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: Runs ``runs()`` returns, newest first.
MAX_RUNS = 200

#: Which outcome stands for a slot of several disks: the worst.
_RANK = {schedule_runner.FAILED: 4, schedule_runner.SKIPPED: 3,
         schedule_runner.PENDING: 2, schedule_runner.CREATED: 1}


def _get(session, policy_id, project_id=None, for_update=False):
    found = session.get(models.SnapshotPolicy, policy_id,
                        with_for_update=for_update,
                        populate_existing=for_update)
    if found is None or (project_id is not None
                         and found.project_id != project_id):
        raise exception.NotFound('Policy %s could not be found.' % policy_id)
    return found


def _last_outcomes(session, policy_ids):
    """``{policy id: outcome of its newest slot}``."""
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
    for policy_id, outcome in rows:
        if _RANK.get(outcome, 0) > _RANK.get(out.get(policy_id), 0):
            out[policy_id] = outcome
    return out


def check_schedule(spec):
    """:raises: BadRequest for an interval below ``[conductor]
    policy_min_interval``, a bad cron expression or an unknown zone.
    """
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
        for name in schedule_runner.rules(found):
            setattr(found, name, spec['retention'].get(name, 0))


def get(policy_id, project_id=None):
    """:returns: (policy, its last slot's outcome or None).
    :raises: NotFound (also for another project's).
    """
    with db.transaction() as s:
        found = _get(s, policy_id, project_id)
        return found, _last_outcomes(s, [found.id]).get(found.id)


def list_(project_id=None, server_id=None):
    """:returns: ``[(policy, last outcome)]``, oldest first."""
    with db.transaction() as s:
        query = sa.select(models.SnapshotPolicy).order_by(
            models.SnapshotPolicy.created_at, models.SnapshotPolicy.id)
        if project_id is not None:
            query = query.where(models.SnapshotPolicy.project_id ==
                                project_id)
        if server_id:
            query = query.where(models.SnapshotPolicy.server_id == server_id)
        found = list(s.scalars(query))
        last = _last_outcomes(s, [p.id for p in found])
        return [(p, last.get(p.id)) for p in found]


def create(server_id, spec):
    """Attach a policy to a server; its first slot is the first after now.

    :param spec: the validated ``policy`` body.
    :returns: the policy.
    :raises: NotFound, BadRequest, QuotaExceeded (``[conductor]
        policy_quota`` per project)
    """
    check_schedule(spec)
    with db.transaction() as s:
        server = db.server_get(s, server_id)
        _check_disks(server, spec.get('disks'))
        quota = CONF.conductor.policy_quota
        if quota >= 0:
            locking.lock_project(s, server.project_id)
            used = s.scalar(
                sa.select(sa.func.count())
                .select_from(models.SnapshotPolicy)
                .where(models.SnapshotPolicy.project_id ==
                       server.project_id))
            if used + 1 > quota:
                raise exception.QuotaExceeded(
                    'Project %s has %d snapshot policies, its quota is %d.'
                    % (server.project_id, used, quota))
        now = schedule_runner.utcnow_seconds()
        found = models.SnapshotPolicy(
            id=operations.new_id(), project_id=server.project_id,
            server_id=server.id, timezone='UTC', enabled=True,
            created_at=now, updated_at=now)
        _apply(found, spec)
        found.next_run = (schedule_runner.first_run(found, now)
                          if found.enabled else None)
        s.add(found)
    LOG.info('Policy %(policy)s on server %(server)s: next run %(next)s',
             {'policy': found.id, 'server': server_id,
              'next': found.next_run})
    return found


def update(policy_id, spec):
    """Change a policy.  A changed schedule, or a policy enabled again,
    gets its next slot from now; a disabled one has none.

    :returns: (policy, last outcome).
    :raises: NotFound, BadRequest
    """
    check_schedule(spec)
    with db.transaction() as s:
        # Its row lock serialises this with a conductor claiming a slot.
        found = _get(s, policy_id, for_update=True)
        _check_disks(s.get(models.Server, found.server_id),
                     spec.get('disks'))
        was = (found.interval, found.cron, found.timezone, found.enabled)
        _apply(found, spec)
        if not found.enabled:
            found.next_run = None
        elif (found.interval, found.cron, found.timezone,
              found.enabled) != was or found.next_run is None:
            found.next_run = schedule_runner.first_run(found)
        s.flush()
        return found, _last_outcomes(s, [found.id]).get(found.id)


def delete(policy_id):
    """Delete a policy and its runs.  Its snapshots stay, as the tenant's
    own (``policy_id`` null): nothing prunes them any more.

    :returns: (the policy as it was, its last outcome).
    :raises: NotFound
    """
    with db.transaction() as s:
        found = _get(s, policy_id, for_update=True)
        last = _last_outcomes(s, [found.id]).get(found.id)
        s.execute(sa.update(models.Snapshot)
                  .where(models.Snapshot.policy_id == policy_id)
                  .values(policy_id=None)
                  .execution_options(synchronize_session=False))
        s.execute(sa.delete(models.PolicyRun)
                  .where(models.PolicyRun.policy_id == policy_id)
                  .execution_options(synchronize_session=False))
        s.delete(found)
    LOG.info('Deleted policy %(policy)s', {'policy': policy_id})
    return found, last


def runs(policy_id):
    """:returns: (the newest :data:`MAX_RUNS` runs, the server's host)."""
    with db.transaction() as s:
        found = _get(s, policy_id)
        server = s.get(models.Server, found.server_id)
        rows = list(s.scalars(
            sa.select(models.PolicyRun)
            .where(models.PolicyRun.policy_id == policy_id)
            .order_by(models.PolicyRun.scheduled_for.desc(),
                      models.PolicyRun.disk_name)
            .limit(MAX_RUNS)))
        return rows, server.host if server is not None else None


def protect(snapshot_id, protected):
    """Pin (or unpin) a snapshot.  A protected snapshot cannot be deleted
    (``deletion.delete`` raises SnapshotProtected) and no policy prunes it.

    Decided under the disk's row lock, like a delete: a delete either came
    first (the snapshot is ``deleting``: refused here) or sees the pin.
    :returns: (snapshot, disk).
    :raises: NotFound, InvalidState (only a ``creating`` or ``available``
        snapshot can be protected)
    """
    with db.transaction() as s:
        snap = db.snapshot_get(s, snapshot_id)
        locking.disk_for_update(s, snap.disk_id)
        snap = db.snapshot_get(s, snapshot_id)
        if protected and snap.status not in (states.CREATING,
                                             states.AVAILABLE):
            raise exception.InvalidState(snapshot=snap.id,
                                         status=snap.status,
                                         action='protecting it')
        if bool(snap.protected) != protected:
            snap.protected = protected
            LOG.info('Snapshot %(snap)s %(what)s',
                     {'snap': snap.id,
                      'what': 'protected' if protected else 'unprotected'})
        s.flush()
        return snap, snap.disk
