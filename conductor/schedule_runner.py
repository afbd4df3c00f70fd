"""Snapshot policies at work: run each due slot exactly once, retry or
skip a run that cannot start, prune after a run's snapshot is available.

Every conductor runs :func:`run_periodic` from its periodic tasks; nothing
here lives in a conductor's memory, so any number of them may share the
database.

**Exactly once.**  A policy's slot is claimed with a compare-and-set
UPDATE of its ``next_run`` (``WHERE next_run = <the slot read>``): of the
conductors that read the same due slot, exactly one changes the row, and
the same transaction records the slot's runs, one per disk (``pending``).
Each attempt at a pending run is claimed the same way (``WHERE attempts =
<read>``), and holds the run for :data:`ATTEMPT_LEASE` seconds, so two
conductors never try one run at once.  The snapshot is then made through
``conductor.creation.create`` like a tenant's, with every limit, the disk
lock and the child-count rule.  A conductor that dies between making the
snapshot and recording it leaves the run pending; the next attempt adopts
the snapshot (same disk, same name, made after the run was claimed, of no
policy) instead of making a second one.

**Retry or skip.**  A run that cannot start because of something passing
(``host_down``, ``disk_busy``, ``database_unavailable``) stays ``pending``
with its reason and is tried again at the next periodic tick, until its
window closes: ``[conductor] policy_retry_window`` seconds after the slot,
or the policy's next slot if that comes first.  Then it is ``skipped``
with the last reason.  One that cannot start for a reason that waiting
does not fix (``chain_too_deep``, ``quota_exceeded``, a disk or a server
that is gone: ``not_found``) is ``skipped`` at once.  A slot first claimed
after its window closed (no conductor ran meanwhile) is ``skipped`` with
reason ``missed``; missed slots are not caught up one by one: the policy
goes on from the next slot after now.

**Pruning.**  Once a run's snapshot is ``available``, the policy's
snapshots of that disk are judged by ``conductor.retention`` and the ones
it does not keep are deleted one by one with ``conductor.deletion.delete``
(the child-count rule: a physical delete, a merge or a logical delete),
oldest first; a disk busy with the previous merge is tried again at the
next tick.  Only snapshots with the policy's ``policy_id`` are considered;
a tenant's own snapshots and protected ones are never deleted.  The
policy's snapshots that ended in ``error`` (no data) are deleted too.
"""

import datetime
import logging

from oslo_config import cfg
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import deletion
from conductor import dispatch
from conductor import exception
from conductor import operations
from conductor import retention
from conductor import slots
from conductor import states
from livesnap import context

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

PENDING = 'pending'
CREATED = 'created'
FAILED = 'failed'
SKIPPED = 'skipped'

#: Reasons that waiting may fix: the run is tried again in its window.
RETRYABLE = ('host_down', 'disk_busy', 'database_unavailable',
             'rate_limited')

#: Seconds one conductor holds a run while it tries it (or prunes after
#: it); past that, another conductor may take it over.
ATTEMPT_LEASE = 120

_RETENTION = ('keep_last', 'keep_hourly', 'keep_daily', 'keep_weekly',
              'keep_monthly', 'keep_yearly')


def rules(policy):
    """The policy's retention as ``{'keep_last': N, ...}``."""
    return {name: getattr(policy, name) or 0 for name in _RETENTION}


def snapshot_name(policy, slot):
    """The name of the snapshot of ``policy``'s run at ``slot``."""
    return '%s-%s' % (policy.name[:230], slot.strftime('%Y%m%dT%H%M%SZ'))


def utcnow_seconds():
    """Now, naive UTC, whole seconds (the slots' precision)."""
    return models.utcnow().replace(microsecond=0)


def _window_end(policy, run):
    end = run.scheduled_for + datetime.timedelta(
        seconds=CONF.conductor.policy_retry_window)
    if policy is not None and policy.next_run is not None:
        end = min(end, policy.next_run)
    return end


#: The run's disk name when the policy's server is gone and the policy
#: names no disks (it covered every disk of the server).
ALL_DISKS = '*'


def _disks(server, names):
    """``[(disk name, disk or None)]`` of the policy's disks; all None if
    the server is gone (one ``ALL_DISKS`` if the policy names none).
    """
    if server is None:
        return [(n, None) for n in (names or [ALL_DISKS])]
    by_name = {d.name: d for d in server.disks}
    if names is None:
        return [(d.name, d) for d in server.disks]
    return [(n, by_name.get(n)) for n in names]


def claim_due(now=None):
    """Claim every due slot this conductor wins and record its runs.

    :returns: the number of slots claimed here.
    """
    now = now or utcnow_seconds()
    with db.transaction() as s:
        due = s.execute(
            sa.select(models.SnapshotPolicy.id,
                      models.SnapshotPolicy.next_run)
            .where(models.SnapshotPolicy.enabled.is_(True))
            .where(models.SnapshotPolicy.next_run <= now)).all()
    claimed = 0
    for policy_id, slot in due:
        try:
            claimed += _claim(policy_id, slot, now)
        except Exception:
            LOG.exception('Policy %(policy)s: claiming the slot of %(slot)s '
                          'failed', {'policy': policy_id, 'slot': slot})
    return claimed


def _claim(policy_id, slot, now):
    """Claim one due slot and record its runs.

    :returns: 1 if this conductor won the slot, else 0.
    """
    with db.transaction() as s:
        policy = s.get(models.SnapshotPolicy, policy_id)
        if policy is None:
            return 0
        following = slots.next_for(policy, max(slot, now))
        result = s.execute(
            sa.update(models.SnapshotPolicy)
            .where(models.SnapshotPolicy.id == policy_id)
            .where(models.SnapshotPolicy.next_run == slot)
            .where(models.SnapshotPolicy.enabled.is_(True))
            .values(next_run=following, last_run=slot)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return 0   # another conductor has it
        server = s.get(models.Server, policy.server_id)
        missed = now >= min(
            slot + datetime.timedelta(
                seconds=CONF.conductor.policy_retry_window), following)
        for name, disk in _disks(server, policy.disks):
            run = models.PolicyRun(
                id=operations.new_id(), policy_id=policy.id,
                project_id=policy.project_id,
                disk_id=disk.id if disk is not None else None,
                disk_name=name, scheduled_for=slot, outcome=PENDING,
                attempts=0, next_attempt=now, prune_status='none',
                conductor=CONF.conductor.host)
            if server is None:
                _end(run, SKIPPED, 'not_found', 'Server %s of the policy '
                     'is gone.' % (policy.server_id,))
            elif disk is None:
                _end(run, SKIPPED, 'not_found', 'Server %s has no disk '
                     'named %s.' % (server.id, name))
            elif missed:
                _end(run, SKIPPED, 'missed', 'No conductor ran the '
                     'policy between the slot and the end of its '
                     'window.')
            s.add(run)
    LOG.info('Policy %(policy)s: claimed the slot of %(slot)s; next '
             '%(next)s', {'policy': policy_id, 'slot': slot,
                          'next': following})
    return 1


def _end(run, outcome, code=None, reason=None):
    run.outcome = outcome
    run.reason_code = code
    run.reason = reason
    run.next_attempt = None


def _claim_attempt(run_id, attempts, now):
    """Take one attempt at a pending run (compare-and-set on its count).

    :returns: (run, policy, server) or None if another conductor took it
        or it ended here (window closed, policy disabled).
    """
    with db.transaction() as s:
        result = s.execute(
            sa.update(models.PolicyRun)
            .where(models.PolicyRun.id == run_id)
            .where(models.PolicyRun.outcome == PENDING)
            .where(models.PolicyRun.attempts == attempts)
            .values(attempts=attempts + 1, conductor=CONF.conductor.host,
                    next_attempt=now + datetime.timedelta(
                        seconds=ATTEMPT_LEASE))
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return None
        run = s.get(models.PolicyRun, run_id, populate_existing=True)
        policy = s.get(models.SnapshotPolicy, run.policy_id)
        if policy is None or not policy.enabled:
            _end(run, SKIPPED, 'disabled', 'The policy was disabled.')
            return None
        if now >= _window_end(policy, run):
            if run.reason_code:
                _end(run, SKIPPED, run.reason_code,
                     'Gave up at the end of the window: %s' % run.reason)
            else:
                _end(run, SKIPPED, 'missed', 'The run could not be tried '
                     'before the end of its window.')
            return None
        server = s.get(models.Server, policy.server_id)
        if server is None:
            _end(run, SKIPPED, 'not_found', 'Server %s of the policy is '
                 'gone.' % (policy.server_id,))
            return None
        return run, policy, server


def _adopt(run, policy):
    """The snapshot an earlier attempt made but did not record, if any."""
    if run.attempts <= 1:
        return None
    with db.transaction() as s:
        return s.scalars(
            sa.select(models.Snapshot.id)
            .where(models.Snapshot.disk_id == run.disk_id)
            .where(models.Snapshot.name == snapshot_name(
                policy, run.scheduled_for))
            .where(models.Snapshot.policy_id.is_(None))
            .where(models.Snapshot.created_at >= run.created_at)
            .limit(1)).first()


def _record_created(run_id, policy_id, snapshot_id, operation_id):
    with db.transaction() as s:
        s.execute(sa.update(models.Snapshot)
                  .where(models.Snapshot.id == snapshot_id)
                  .values(policy_id=policy_id)
                  .execution_options(synchronize_session=False))
        run = s.get(models.PolicyRun, run_id, with_for_update=True)
        if run is None:
            return   # the policy was deleted meanwhile
        _end(run, CREATED)
        run.snapshot_id = snapshot_id
        run.operation_id = operation_id
        run.prune_status = 'waiting'


def _record_refusal(run_id, code, message, now):
    """Retry (in the window) or skip a run that could not start."""
    with db.transaction() as s:
        run = s.get(models.PolicyRun, run_id, with_for_update=True)
        if run is None or run.outcome != PENDING:
            return None
        policy = s.get(models.SnapshotPolicy, run.policy_id)
        run.reason_code, run.reason = code, message
        if code in RETRYABLE and now < _window_end(policy, run):
            run.next_attempt = now   # the next tick
        else:
            _end(run, SKIPPED, code, message)
        return run.outcome


def attempt(run_id, attempts, now=None):
    """One attempt at a pending run.

    :returns: the run's outcome after it, or None if it was not ours.
    """
    now = now or utcnow_seconds()
    claimed = _claim_attempt(run_id, attempts, now)
    if claimed is None:
        return None
    run, policy, server = claimed
    adopted = _adopt(run, policy)
    if adopted is not None:
        LOG.warning('Policy %(policy)s: adopting snapshot %(snap)s that an '
                    'earlier attempt made', {'policy': policy.id,
                                             'snap': adopted})
        _record_created(run.id, policy.id, adopted, None)
        return CREATED
    try:
        ctxt = context.make(policy.project_id)
        snapshot_id, operation_id, sent = creation.create(
            ctxt, server.id, run.disk_name,
            snapshot_name(policy, run.scheduled_for),
            project_id=policy.project_id,
            requested_by=operations.POLICY)
        dispatch.send(ctxt, sent)
    except exception.HostDown:
        return _record_refusal(run.id, 'host_down', 'The agent of the '
                               'server\'s host is not reporting.', now)
    except exception.LivesnapException as exc:
        return _record_refusal(run.id, exc.code, str(exc), now)
    except (sa_exc.OperationalError, sa_exc.InterfaceError,
            sa_exc.DisconnectionError) as exc:
        LOG.warning('Policy %(policy)s: database unavailable: %(error)s',
                    {'policy': policy.id,
                     'error': str(exc).splitlines()[0]})
        return _record_refusal(run.id, 'database_unavailable',
                               'The database was unavailable.', now)
    _record_created(run.id, policy.id, snapshot_id, operation_id)
    LOG.info('Policy %(policy)s: snapshot %(snap)s of %(server)s/%(disk)s '
             '(operation %(op)s)', {'policy': policy.id, 'snap': snapshot_id,
                                    'server': server.id,
                                    'disk': run.disk_name,
                                    'op': operation_id})
    return CREATED


def start_pending(now=None):
    """Attempt every pending run that is due.

    :returns: the number of runs that made a snapshot here.
    """
    now = now or utcnow_seconds()
    with db.transaction() as s:
        due = s.execute(
            sa.select(models.PolicyRun.id, models.PolicyRun.attempts)
            .where(models.PolicyRun.outcome == PENDING)
            .where(models.PolicyRun.next_attempt <= now)
            .order_by(models.PolicyRun.scheduled_for,
                      models.PolicyRun.id)).all()
    made = 0
    for run_id, attempts in due:
        try:
            if attempt(run_id, attempts, now) == CREATED:
                made += 1
        except Exception:
            # The run stays pending; its hold ends and it is tried again.
            LOG.exception('Run %(run)s: the attempt failed', {'run': run_id})
    return made


def check_created(now=None):
    """Runs whose snapshot is now available start pruning; those whose
    snapshot ended in ``error`` (or vanished) are ``failed``.
    """
    with db.transaction() as s:
        rows = s.execute(
            sa.select(models.PolicyRun.id, models.Snapshot.status,
                      models.PolicyRun.operation_id)
            .select_from(models.PolicyRun)
            .outerjoin(models.Snapshot,
                       models.Snapshot.id == models.PolicyRun.snapshot_id)
            .where(models.PolicyRun.prune_status == 'waiting')).all()
        for run_id, status, operation_id in rows:
            if status == states.CREATING:
                continue
            values = {'prune_status': 'pending'}
            if status != states.AVAILABLE and status not in (
                    states.DELETING, states.DELETED):
                op = s.get(models.Operation, operation_id) \
                    if operation_id else None
                values = {'prune_status': 'none', 'outcome': FAILED,
                          'reason_code': 'snapshot_failed',
                          'reason': (op.error if op is not None and op.error
                                     else 'The snapshot was not made.')}
            s.execute(sa.update(models.PolicyRun)
                      .where(models.PolicyRun.id == run_id)
                      .where(models.PolicyRun.prune_status == 'waiting')
                      .values(**values)
                      .execution_options(synchronize_session=False))


def _claim_prune(run_id, now):
    with db.transaction() as s:
        result = s.execute(
            sa.update(models.PolicyRun)
            .where(models.PolicyRun.id == run_id)
            .where(models.PolicyRun.prune_status == 'pending')
            .where(sa.or_(models.PolicyRun.prune_claimed_until.is_(None),
                          models.PolicyRun.prune_claimed_until <= now))
            .values(prune_claimed_until=now + datetime.timedelta(
                seconds=ATTEMPT_LEASE))
            .execution_options(synchronize_session=False))
        return result.rowcount == 1


def to_prune(session, policy, disk_id):
    """The ids of the policy's snapshots of the disk that its retention
    does not keep (and its ``error`` ones), oldest first.
    """
    snaps = list(session.scalars(
        sa.select(models.Snapshot)
        .where(models.Snapshot.policy_id == policy.id)
        .where(models.Snapshot.disk_id == disk_id)
        .where(models.Snapshot.status.in_((states.AVAILABLE, states.ERROR)))
        .order_by(models.Snapshot.created_at, models.Snapshot.id)))
    available = [retention.Item(x.id, x.created_at, bool(x.protected))
                 for x in snaps if x.status == states.AVAILABLE]
    marks = retention.select(available, rules(policy), policy.timezone)
    return [x.id for x in snaps if not x.protected and (
        x.status == states.ERROR or marks.get(x.id) == retention.REMOVE)]


def prune(run_id, now=None):
    """Delete what the run's policy no longer keeps on the run's disk.

    :returns: the ids whose deletion was started here.
    """
    now = now or utcnow_seconds()
    if not _claim_prune(run_id, now):
        return []
    with db.transaction() as s:
        run = s.get(models.PolicyRun, run_id)
        policy = s.get(models.SnapshotPolicy, run.policy_id) \
            if run is not None else None
        if policy is None:
            return []
        victims = to_prune(s, policy, run.disk_id)
        project_id = policy.project_id
    started, finished = [], True
    for snapshot_id in victims:
        try:
            ctxt = context.make(project_id)
            _, sent = deletion.delete(ctxt, snapshot_id,
                                      project_id=project_id,
                                      requested_by=operations.POLICY)
            dispatch.send(ctxt, sent)
        except (exception.DiskBusy, exception.HostDown) as exc:
            # The previous merge still runs, or the host is away: the next
            # tick goes on.
            LOG.info('Policy %(policy)s: pruning waits: %(error)s',
                     {'policy': policy.id, 'error': exc})
            finished = False
            break
        except (exception.NotFound, exception.Conflict) as exc:
            LOG.info('Policy %(policy)s: not pruning %(snap)s: %(error)s',
                     {'policy': policy.id, 'snap': snapshot_id,
                      'error': exc})
            continue
        started.append(snapshot_id)
        LOG.info('Policy %(policy)s: pruning snapshot %(snap)s',
                 {'policy': policy.id, 'snap': snapshot_id})
    with db.transaction() as s:
        run = s.get(models.PolicyRun, run_id, with_for_update=True)
        if run is not None:
            if started:
                run.pruned_ids = list(run.pruned_ids or []) + started
            run.prune_claimed_until = None
            if finished:
                run.prune_status = 'done'
    return started


def prune_pending(now=None):
    now = now or utcnow_seconds()
    with db.transaction() as s:
        run_ids = list(s.scalars(
            sa.select(models.PolicyRun.id)
            .where(models.PolicyRun.prune_status == 'pending')
            .order_by(models.PolicyRun.scheduled_for)))
    pruned = []
    for run_id in run_ids:
        try:
            pruned.extend(prune(run_id, now))
        except Exception:
            # Its hold ends and the next tick prunes again.
            LOG.exception('Run %(run)s: pruning failed', {'run': run_id})
    return pruned


def run_periodic(now=None):
    """The periodic task: claim due slots, try pending runs, follow the
    snapshots made, prune.
    """
    now = now or utcnow_seconds()
    claim_due(now)
    start_pending(now)
    check_created(now)
    prune_pending(now)


def first_run(policy, now=None):
    """The first slot of a (re)enabled or rescheduled policy."""
    return slots.next_for(policy, now or utcnow_seconds())
