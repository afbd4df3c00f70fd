"""Sending the flows' tasks and applying the agents' reports.

The top of the conductor's operations: the flows below (``creation``,
``deletion``, ``revert``, ``clones``, ``groups``, ``waiting``) decide and
record, and return what is to be sent; this module casts it to the
host's agent (:func:`send`), applies each report once through the flows'
table (``conductor.actions``, :func:`apply_report`), and starts what waited
for the disk the report freed.  The flows never import it: the API, the
RPC manager, the periodic tasks and the snapshot policies' runs call it
with what the flows returned.
"""

import calendar
import datetime
import logging

from oslo_config import cfg

from conductor import actions
from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import deletion
from conductor import locking
from conductor import operations
from conductor import states
from conductor import unregister
from conductor import waiting
from livesnap import context
from livesnap import tasks

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def _expires_at(op):
    """UNIX time after which an agent that never started the task refuses
    it: ``operation_timeout`` from the moment it is sent, whatever the
    operation's next check (the abandonment, recorded by the agent, is the
    first guard against a late task; this is the second).
    """
    return calendar.timegm((models.utcnow() + datetime.timedelta(
        seconds=CONF.conductor.operation_timeout)).timetuple())


def send_task(ctxt, op):
    """Cast the operation's task (as recorded) to its host's agent."""
    method = getattr(agent_versions.client(), tasks.ACTIONS[op.action])
    method(ctxt, op.host, op.task, expires_at=_expires_at(op))


def send(ctxt, operation):
    """Send a running operation's task; fail it if it cannot be sent.

    The operation was marked ``running`` when it took its disk's lock, so
    nothing here writes its status after the cast: the agent's report,
    however fast, is the next change.

    :param operation: what a flow returned to send: an
        :class:`operations.Outgoing` read in the committed transaction
        that started it, or an operation id (read again here, and sent
        only if it is still ``running``); None (nothing to send: the
        operation waits or ended at once) is ignored.
    """
    if operation is None:
        return
    if isinstance(operation, operations.Outgoing):
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
        _after_finish(ctxt, disk_id)
    if disk_id is not None:
        try:
            unregister.after_operation(operation_id)
        except Exception:
            # advance_server_deletions (periodic) retries.
            LOG.exception('Moving on the server deletion after operation '
                          '%(op)s failed', {'op': operation_id})
    return disk_id is not None


def _apply_report(operation_id, report):
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id, with_for_update=True)
        if op is None:
            LOG.warning('Report for unknown operation %(op)s ignored',
                        {'op': operation_id})
            return None, False
        if op.status in states.ENDED and not in_doubt(s, op):
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
        on_success, on_failure = actions.report_handlers(op.action)
        if report.get('status') == states.SUCCEEDED:
            on_success(s, op, report.get('result') or {})
            operations.set_status(op, states.SUCCEEDED)
            if op.progress is not None or _copies(op):
                op.progress = 100.0
            op.error = None
        else:
            op.error = report.get('error') or 'The operation failed.'
            on_failure(s, op, report)
            operations.set_status(op, states.FAILED)
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
    a clone)?  It ends at 100 even if it was too short to report any.
    """
    return op.mode == 'merge' or op.action == 'clone'


def in_doubt(session, op):
    """A failed operation that still holds its disk's lock: it was given
    up on while its agent could not be asked, and the agent's late report
    decides what really happened.
    """
    if op.status != states.FAILED:
        return False
    disk = session.get(models.Disk, op.disk_id)
    return disk is not None and disk.operation_id == op.id


def _after_finish(ctxt, disk_id):
    """The disk's lock is free again: start what waits for it (a tenant's
    request first, then the conductor's own deferred work).
    """
    try:
        start_work_waiting_for_disk(ctxt, disk_id)
    except Exception:
        # The periodic task retries; a report is never lost over this.
        LOG.exception('Starting the work waiting for disk %(disk)s failed',
                      {'disk': disk_id})


def finish_deferred(ctxt, disk_id):
    """Start and send the finishing of one logically deleted snapshot of
    the disk, if one can be finished now (``deletion.finish_deferred``).

    :returns: the operation id started, or None.
    """
    sent = deletion.finish_deferred(disk_id)
    if sent is None:
        return None
    send(ctxt or context.make(), sent)
    return sent.id


def start_work_waiting_for_disk(ctxt, disk_id):
    """The disk's lock was released: start what waits for it, tenants
    first, then the conductor's own deferred deletions.
    """
    ctxt = ctxt or context.make()
    # Bounded: each round ends one waiting operation or returns.
    for _ in range(100):
        started = waiting.start_next(disk_id)
        if started is None:
            break
        sent = started[1]
        if sent is not None:
            send(ctxt, sent)
            return
    finish_deferred(ctxt, disk_id)


def start_waiting():
    """Periodic backstop: start waiting operations whose disk is free.

    :returns: the number of disks looked at.
    """
    with db.transaction() as s:
        disk_ids = db.disks_with_queued_operations(s)
    for disk_id in disk_ids:
        try:
            start_work_waiting_for_disk(context.make(), disk_id)
        except Exception:
            LOG.exception('Could not start the operations waiting for disk '
                          '%(disk)s', {'disk': disk_id})
    return len(disk_ids)


def delete_server(ctxt, server_id, keep_snapshots=False, force=False):
    """Unregister a server (``conductor.unregister.delete``) and start
    deleting its snapshots.

    :returns: ``(operation id or None, [files left])``.
    """
    ctxt = ctxt or context.make()
    operation_id, files, disk_ids = unregister.delete(
        ctxt, server_id, keep_snapshots=keep_snapshots, force=force)
    for disk_id in disk_ids:
        _after_finish(ctxt, disk_id)
    if operation_id is not None:
        unregister.advance(server_id)
    return operation_id, files


def advance_server_deletions():
    """Periodic backstop: move on every running server deletion.

    :returns: the number of servers whose records were removed.
    """
    done = 0
    for server_id in sorted(unregister.deleting_ids()):
        try:
            done += bool(unregister.advance(server_id))
        except Exception:
            LOG.exception('Could not move on the deletion of server '
                          '%(id)s', {'id': server_id})
    return done
