"""Operation records: creation, dispatch to an agent, and reports.

An operation is the conductor's durable memory of one task: what was
decided, the task as sent (so it can be re-sent unchanged), the agent's
steps with their timings, and how it ended.  Reports are applied under a
row lock and only once, whichever conductor receives them.
"""

import calendar
import datetime
import logging
import time
import uuid

from oslo_config import cfg

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# action -> (on_success, on_failure); filled in by the policy modules.
_HANDLERS = {}
# Called with (ctxt, disk_id) after any operation on a disk has ended and
# released the disk's lock (deferred deletions start from here).
_AFTER_FINISH = []


def register_handlers(action, on_success, on_failure):
    _HANDLERS[action] = (on_success, on_failure)


def register_after_finish(hook):
    if hook not in _AFTER_FINISH:
        _AFTER_FINISH.append(hook)


def _after_finish(ctxt, disk_id):
    for hook in _AFTER_FINISH:
        try:
            hook(ctxt, disk_id)
        except Exception:
            # The periodic task retries; a report is never lost over this.
            LOG.exception('After-operation hook %(hook)s failed for disk '
                          '%(disk)s', {'hook': hook.__name__,
                                       'disk': disk_id})


def new_id():
    return str(uuid.uuid4())


def make(session, operation_id, action, server, disk, snapshot_id=None,
         mode=None, task=None, prior_status=None, requested_by='tenant',
         status='pending'):
    op = models.Operation(
        id=operation_id, project_id=server.project_id, server_id=server.id,
        disk_id=disk.id, snapshot_id=snapshot_id, host=server.host,
        action=action, status=status, mode=mode, task=task, steps=[],
        prior_status=prior_status, requested_by=requested_by, attempts=0,
        conductor=CONF.conductor.host)
    if task is not None:
        op.deadline = models.utcnow() + datetime.timedelta(
            seconds=CONF.conductor.operation_timeout)
    session.add(op)
    return op


def step(name, **detail):
    """A step the conductor itself performed (e.g. a logical delete)."""
    entry = {'name': name, 'started_at': time.time(), 'duration_ms': 0.0,
             'status': 'done'}
    if detail:
        entry['detail'] = detail
    return entry


# operation action -> AgentAPI method that performs it
_AGENT_METHODS = {'create': 'create_snapshot', 'delete': 'delete_snapshot',
                  'revert': 'revert_disk'}


def _expires_at(op):
    return calendar.timegm(op.deadline.timetuple()) if op.deadline else None


def send_task(ctxt, op):
    """Cast the operation's task (as recorded) to its host's agent."""
    method = getattr(agent_rpcapi.AgentAPI(), _AGENT_METHODS[op.action])
    method(ctxt, op.host, op.task, expires_at=_expires_at(op))


def dispatch(ctxt, operation_id):
    """Send the operation's task; mark it running, or failed on error."""
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        s.expunge(op)
    try:
        send_task(ctxt, op)
    except Exception as exc:
        LOG.exception('Could not send operation %(op)s', {'op': operation_id})
        apply_report(operation_id, {
            'status': 'failed', 'error_code': 'rpc_error',
            'error': 'The task could not be sent to the agent: %s'
                     % exc.__class__.__name__})
        return
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        if op is not None and op.status == 'pending':
            op.status = 'running'


def apply_report(operation_id, report, ctxt=None):
    """Apply an agent's final report once; later duplicates are ignored."""
    disk_id = _apply_report(operation_id, report)
    if disk_id is not None:
        _after_finish(ctxt or {}, disk_id)
    return disk_id is not None


def _apply_report(operation_id, report):
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id, with_for_update=True)
        if op is None:
            LOG.warning('Report for unknown operation %(op)s ignored',
                        {'op': operation_id})
            return None
        if op.status in ('succeeded', 'failed') and not _in_doubt(s, op):
            LOG.info('Duplicate report for finished operation %(op)s '
                     'ignored', {'op': operation_id})
            return None
        op.steps = (op.steps or []) + list(report.get('steps') or [])
        if report.get('pause_ms') is not None:
            op.pause_ms = (op.pause_ms or 0.0) + report['pause_ms']
        on_success, on_failure = _HANDLERS[op.action]
        if report.get('status') == 'succeeded':
            on_success(s, op, report.get('result') or {})
            op.status = 'succeeded'
            op.progress = 100.0 if op.progress is not None else None
            op.error = None
        else:
            op.error = report.get('error') or 'The operation failed.'
            on_failure(s, op, report)
            op.status = 'failed'
        db.unlock_disk(s, op.disk_id, op.id)
        op.deadline = None
        LOG.info('Operation %(op)s (%(action)s, %(mode)s) %(status)s',
                 {'op': op.id, 'action': op.action, 'mode': op.mode,
                  'status': op.status})
        return op.disk_id


def _in_doubt(session, op):
    """A failed operation that still holds its disk's lock: it was given
    up on while its agent could not be asked, and the agent's late report
    decides what really happened."""
    if op.status != 'failed':
        return False
    disk = session.get(models.Disk, op.disk_id)
    return disk is not None and disk.operation_id == op.id


def apply_progress(operation_id, progress):
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        if op is not None and op.status in ('pending', 'running'):
            op.progress = float(progress)
