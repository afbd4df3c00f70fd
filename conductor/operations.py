"""Operation records: creation, dispatch to an agent, and reports.

An operation is the conductor's durable memory of one task: what was
decided, the task as sent (so it can be re-sent unchanged), the agent's
steps with their timings, and how it ended.  Reports are applied under a
row lock and only once, whichever conductor receives them.

An operation that starts at once is recorded ``running`` in the same
transaction that takes its disk's lock, before its task is cast, so a fast
agent's report can never be overwritten by a later "running".  Every
status change is checked against ``conductor.states``.  A tenant's
operation that finds its disk busy with the conductor's own deferred work
is recorded ``pending`` and started by ``conductor.waiting`` when the disk
is free.
"""

import calendar
import collections
import copy
import datetime
import logging
import time
import uuid

from oslo_config import cfg
import sqlalchemy as sa

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import locking
from conductor import notifications
from conductor import states
from livesnap import tasks as tasks_mod

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def report_handlers(action):
    """``(on_success, on_failure)``: what applies a report of ``action``.

    An explicit table, read when a report arrives, so a process applies
    every action's reports whatever modules it happened to import.  The
    policy modules import this one, hence the imports here.
    """
    from conductor import clones
    from conductor import creation
    from conductor import deletion
    from conductor import groups
    from conductor import revert
    return {
        'clone': (clones.apply_cloned, clones.apply_clone_failure),
        'create_group': (groups.apply_created, groups.apply_create_failure),
        'create': (creation.apply_created, creation.apply_create_failure),
        'delete': (deletion.apply_deleted, deletion.apply_delete_failure),
        'revert': (revert.apply_reverted, revert.apply_revert_failure),
    }[action]


def _after_finish(ctxt, disk_id):
    """The disk's lock is free again: start what waits for it (a tenant's
    request first, then the conductor's own deferred work)."""
    from conductor import waiting
    try:
        waiting.start_work_waiting_for_disk(ctxt, disk_id)
    except Exception:
        # The periodic task retries; a report is never lost over this.
        LOG.exception('Starting the work waiting for disk %(disk)s failed',
                      {'disk': disk_id})


#: ``requested_by`` of an operation a tenant asked for through the API.
TENANT = 'tenant'
#: ... of one a snapshot policy's run started (``conductor.scheduler``:
#: its snapshots, and the deletions that prune them).
POLICY = 'policy'
#: ... of the conductor's own deferred work (``conductor.deletion``).
CONDUCTOR = 'conductor'
#: Who may ask for an operation.
REQUESTERS = (TENANT, POLICY, CONDUCTOR)


def new_id():
    return str(uuid.uuid4())


def record(session, operation_id, action, server, disk, snapshot_id=None,
         mode=None, task=None, prior_status=None, requested_by=TENANT,
         status=None):
    """Record an operation; ``pending`` unless a status is given.

    An operation with a task must hold its disk's lock: use ``start``.
    """
    if status is None:
        status = states.RUNNING if task is not None else states.PENDING
    op = models.Operation(
        id=operation_id, project_id=server.project_id, server_id=server.id,
        disk_id=disk.id, snapshot_id=snapshot_id, host=server.host,
        action=action, status=status, mode=mode, task=task, steps=[],
        prior_status=prior_status, requested_by=requested_by, attempts=0,
        conductor=CONF.conductor.host)
    if task is not None:
        op.deadline = first_deadline()
    session.add(op)
    notifications.queue(op, created=True)
    return op


def set_status(op, new):
    """Change a locked (or just created) operation's status.

    :raises: states.InvalidTransition
    """
    if op.status != new and not states.operation_may(op.status, new):
        raise states.InvalidTransition('operation %s: %s -> %s'
                                       % (op.id, op.status, new))
    op.status = new
    notifications.queue(op)


def may_start_now(session, server, disk):
    """May an operation of a tenant start on ``disk`` now?

    ``disk`` was read under its row lock (``locking.disk_for_update``).
    :returns: True if the disk is free; False if it is busy with the
        conductor's own (deferred) work, and the tenant's operation is to
        wait for it as ``pending``.
    :raises: DiskBusy if the disk is busy with a tenant's operation, or a
        tenant's operation already waits for it.
    """
    waiting = db.queued_operation(session, disk.id)
    if disk.operation_id is None and waiting is None:
        return True
    holder = session.get(models.Operation, disk.operation_id) \
        if disk.operation_id else None
    if waiting is None and holder is not None and \
            holder.requested_by == CONDUCTOR:
        return False
    raise exception.DiskBusy(disk=disk.name, server=server.id,
                             operation=(waiting or holder).id
                             if (waiting or holder) else disk.operation_id)


def lock_disk_and_start(session, op, disk, task):
    """Take the disk's lock for ``op`` and mark it running with ``task``.

    The caller holds the disk's row lock and has seen the disk free.
    :raises: DiskBusy if the lock is held after all.
    """
    if not locking.lock_disk(session, disk.id, op.id):
        raise exception.DiskBusy(disk=disk.name, server=disk.server_id,
                                 operation=disk.operation_id)
    task['operation_id'] = op.id
    if not agent_rpcapi.AgentAPI().can_send_locators(op.host):
        # An agent older than RPC 1.4 is still about: the legacy task.
        task = tasks_mod.legacy_task(op.action, task)
    op.task = task
    op.deadline = first_deadline()
    set_status(op, states.RUNNING)


def step(name, **detail):
    """A step the conductor itself performed (e.g. a logical delete)."""
    entry = {'name': name, 'started_at': time.time(), 'duration_ms': 0.0,
             'status': 'done'}
    if detail:
        entry['detail'] = detail
    return entry


# operation action -> AgentAPI method that performs it
_AGENT_METHODS = tasks_mod.ACTIONS


def first_deadline():
    """When to first ask the agent about a task just sent: soon, so a task
    lost on the way is sent again in seconds (see ``deadlines``)."""
    return models.utcnow() + datetime.timedelta(
        seconds=CONF.conductor.task_receipt_timeout)


def _expires_at(op):
    """UNIX time after which an agent that never started the task refuses
    it: ``operation_timeout`` from the moment it is sent, whatever the
    operation's next check (the abandonment, recorded by the agent, is the
    first guard against a late task; this is the second)."""
    return calendar.timegm((models.utcnow() + datetime.timedelta(
        seconds=CONF.conductor.operation_timeout)).timetuple())


class Outgoing(collections.namedtuple('Outgoing',
                                      'id host action task requested_by')):
    """A started operation's task as read in the transaction that started
    it (see :func:`outgoing`), to cast once that transaction committed
    without reading the operation again."""


def outgoing(op):
    """What :func:`dispatch` casts for ``op``, which was just started
    (``lock_disk_and_start``) in the caller's transaction."""
    return Outgoing(op.id, op.host, op.action, copy.deepcopy(op.task),
                    op.requested_by)


def send_task(ctxt, op):
    """Cast the operation's task (as recorded) to its host's agent."""
    method = getattr(agent_rpcapi.AgentAPI(), _AGENT_METHODS[op.action])
    method(ctxt, op.host, op.task, expires_at=_expires_at(op))


def dispatch(ctxt, operation):
    """Send a running operation's task; fail it if it cannot be sent.

    The operation was marked ``running`` when it took its disk's lock, so
    nothing here writes its status after the cast: the agent's report,
    however fast, is the next change.

    :param operation: an :class:`Outgoing` read in the committed
        transaction that started it, or an operation id (read again here,
        and sent only if it is still ``running``).
    """
    if isinstance(operation, Outgoing):
        op = operation
    else:
        with db.transaction() as s:
            op = s.get(models.Operation, operation)
            s.expunge(op)
        if op.status != states.RUNNING:
            LOG.warning('Operation %(op)s is %(status)s; not sent',
                        {'op': op.id, 'status': op.status})
            return
    operation_id = op.id
    try:
        send_task(ctxt, op)
    except Exception as exc:
        LOG.exception('Could not send operation %(op)s', {'op': operation_id})
        apply_report(operation_id, {
            'status': states.FAILED, 'error_code': 'rpc_error',
            'error': 'The task could not be sent to the agent: %s'
                     % exc.__class__.__name__})


def apply_report(operation_id, report, ctxt=None):
    """Apply an agent's final report once; later duplicates are ignored."""
    disk_id, waits = _apply_report(operation_id, report)
    if waits:
        _after_finish(ctxt or {}, disk_id)
    return disk_id is not None


def _apply_report(operation_id, report):
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id, with_for_update=True)
        if op is None:
            LOG.warning('Report for unknown operation %(op)s ignored',
                        {'op': operation_id})
            return None, False
        if op.status in states.ENDED and not _in_doubt(s, op):
            LOG.info('Duplicate report for finished operation %(op)s '
                     'ignored', {'op': operation_id})
            return None, False
        if op.status == states.PENDING:
            LOG.warning('Report for operation %(op)s, which was never '
                        'started, ignored', {'op': operation_id})
            return None, False
        # Lock order: the operation, then its disk.  Reports change the
        # disk's tree; nobody else may while this row is held.
        locking.disk_for_update(s, op.disk_id)
        op.steps = (op.steps or []) + list(report.get('steps') or [])
        if report.get('pause_ms') is not None:
            op.pause_ms = (op.pause_ms or 0.0) + report['pause_ms']
        on_success, on_failure = report_handlers(op.action)
        if report.get('status') == states.SUCCEEDED:
            on_success(s, op, report.get('result') or {})
            set_status(op, states.SUCCEEDED)
            if op.progress is not None or _copies(op):
                op.progress = 100.0
            op.error = None
        else:
            op.error = report.get('error') or 'The operation failed.'
            on_failure(s, op, report)
            set_status(op, states.FAILED)
        locking.unlock_disk(s, op.disk_id, op.id)
        op.deadline = None
        LOG.info('Operation %(op)s (%(action)s, %(mode)s) %(status)s',
                 {'op': op.id, 'action': op.action, 'mode': op.mode,
                  'status': op.status})
        # Read under the disk's row lock: whatever starts waiting for the
        # disk from now on finds it free (or waits for this commit).
        return op.disk_id, db.work_waits_for_disk(s, op.disk_id)


def _copies(op):
    """Is ``op``'s work a copy whose progress the agent reports (a merge,
    a clone)?  It ends at 100 even if it was too short to report any."""
    return op.mode == 'merge' or op.action == 'clone'


def _in_doubt(session, op):
    """A failed operation that still holds its disk's lock: it was given
    up on while its agent could not be asked, and the agent's late report
    decides what really happened."""
    if op.status != states.FAILED:
        return False
    disk = session.get(models.Disk, op.disk_id)
    return disk is not None and disk.operation_id == op.id


def apply_progress(operation_id, progress):
    """Record a running operation's progress (never after it ended)."""
    with db.transaction() as s:
        s.execute(
            sa.update(models.Operation)
            .where(models.Operation.id == operation_id)
            .where(models.Operation.status == states.RUNNING)
            .values(progress=float(progress))
            .execution_options(synchronize_session=False))
