"""Operations in flight: ask the agent, apply, re-send or give up.

No operation stays ``pending`` or ``running`` for ever.  A conductor asks
the host's agent what its journal says (``get_operation``, idempotent)
when an operation's deadline passes (the first comes ``[conductor]
task_receipt_timeout`` after its task is sent, so a task lost on the way
is sent again within seconds), and, when the conductor starts, at
once about every operation in flight (``reconcile_in_flight``): the
conductor that sent a task or was applying a report may have died, and
nothing should wait for ``[conductor] operation_timeout`` for that.

* **done**: the report was lost on the way; apply the journal's copy and
  acknowledge it.
* **running**: the agent is still at it (a long merge); at the deadline,
  extend it.  (An agent whose journal says running but that no longer
  runs the task runs it again by itself, see ``agent.task_runner``.)
* **never seen**: the task was lost (a broker restart, a conductor that
  died before sending it); send it again, at the deadline with a new
  one, up to ``[conductor] max_task_attempts`` times.  Then give up: the
  agent records the abandonment in its journal (``abandon_operation``,
  answered only once written), so a late copy of the task is refused by
  operation id, and only then is the operation failed and the disk
  released.  The task's ``expires_at`` stays as a second guard.
* **no answer** (the host is down): before ``operation_timeout`` has
  passed since the operation began, ask again after
  ``task_receipt_timeout``; then the operation is marked ``failed``
  with the reason, but the disk stays locked: the agent may have paused,
  pivoted or merged before it died, and only its journal knows.  The
  agent replays its journal when it starts and reports; that late report
  is then applied (see ``dispatch.in_doubt``).  Meanwhile the conductor
  asks again every ``[conductor] host_down_time`` once the host sends
  heartbeats again, and gives up (as above) if the agent never saw it.
"""

import datetime
import logging

from oslo_config import cfg
import sqlalchemy as sa

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import dispatch
from conductor import reports
from conductor import states
from conductor import unregister
from livesnap import context
from livesnap import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def _in_flight_ids(overdue_only=True):
    """Operations pending or running, and failed ones still holding their
    disk's lock (in doubt); with ``overdue_only``, those past their
    deadline.  :returns: [(operation id, host)], oldest first.
    """
    now = models.utcnow()
    with db.transaction() as s:
        late = (sa.select(models.Operation.id, models.Operation.host,
                          models.Operation.created_at)
                .where(models.Operation.status.in_(states.ACTIVE))
                # a server's deletion has no task: its snapshots' have
                .where(models.Operation.action != unregister.ACTION))
        in_doubt = (sa.select(models.Operation.id, models.Operation.host,
                              models.Operation.created_at)
                    .join(models.Disk,
                          models.Disk.operation_id == models.Operation.id)
                    .where(models.Operation.status == states.FAILED))
        if overdue_only:
            late = late.where(models.Operation.deadline < now)
            in_doubt = in_doubt.where(models.Operation.deadline < now)
        rows = list(s.execute(late)) + list(s.execute(in_doubt))
    rows.sort(key=lambda r: r[2])
    return [(r[0], r[1]) for r in rows]


def _overdue_ids():
    return [op_id for op_id, _host in _in_flight_ids(overdue_only=True)]


def _extend(op_id, status=None, error=None, attempts=None, seconds=None):
    """Extend (and maybe change) an operation that has not ended, or is
    in doubt; by ``seconds``, or ``[conductor] operation_timeout``.

    :returns: the operation, or None if it ended meanwhile (its report
        was applied while the agent was being asked): nothing is changed.
    """
    with db.transaction() as s:
        op = s.get(models.Operation, op_id, with_for_update=True)
        if op.status not in states.ACTIVE and not dispatch.in_doubt(s, op):
            return None
        if status is not None and not states.operation_may(op.status,
                                                           status):
            return None
        op.deadline = models.utcnow() + datetime.timedelta(
            seconds=seconds or CONF.conductor.operation_timeout)
        if status is not None:
            op.status = status
        if error is not None:
            op.error = error
        if attempts is not None:
            op.attempts = attempts
        return op


def _holds_lock(session, op):
    disk = session.get(models.Disk, op.disk_id)
    return disk is not None and disk.operation_id == op.id


def _load_open(op_id):
    """The operation if it is still in flight or in doubt, else None."""
    with db.transaction() as s:
        op = s.get(models.Operation, op_id)
        if op is None:
            return None
        if op.status not in states.ACTIVE and \
                not _holds_lock(s, op):
            return None
        if op.status == states.PENDING and op.task is None:
            # Waiting for its disk (conductor.waiting): no agent has it.
            return None
        host_alive = db.host_is_alive(s, op.host)
        s.expunge(op)
    return op, host_alive


def check_overdue():
    """Resolve every operation whose deadline has passed.

    :returns: the number of operations looked at.
    """
    ids = _overdue_ids()
    for op_id in ids:
        try:
            check_one(op_id)
        except Exception:
            LOG.exception('Could not check overdue operation %(op)s',
                          {'op': op_id})
    return len(ids)


def reconcile_in_flight():
    """At start: settle every operation in flight with its agent, now.

    Safe however many conductors do it at once: asking is idempotent, a
    re-sent task is recognised by its operation id, and a report applies
    once.  A host that does not answer is asked about one operation only;
    its others wait for their deadlines as before.
    :returns: {outcome: count}
    """
    outcomes = {}
    silent = set()
    for op_id, host in _in_flight_ids(overdue_only=False):
        if host in silent:
            continue
        try:
            outcome = check_one(op_id, at_deadline=None)
        except Exception:
            LOG.exception('Could not reconcile operation %(op)s',
                          {'op': op_id})
            continue
        if outcome == 'no-answer':
            silent.add(host)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if outcomes:
        LOG.info('Reconciled the operations in flight at start: '
                 '%(outcomes)s', {'outcomes': outcomes})
    return outcomes


def check_one(op_id, at_deadline=True):
    """Ask the agent about one operation and act on the answer.

    :param at_deadline: True when the deadline has passed (extend, re-send
        with a new deadline, or fail); False for a look in passing (at
        start), which acts only on a definite answer; None to decide from
        the operation's deadline.
    :returns: what was done: ``applied``, ``running``, ``resent``,
        ``failed``, ``in-doubt``, ``no-answer``, ``host-down`` or
        ``finished`` (nothing left to do).
    """
    ctxt = context.make()
    loaded = _load_open(op_id)
    if loaded is None:
        return 'finished'
    op, host_alive = loaded
    if at_deadline is None:
        at_deadline = op.deadline is not None and \
            op.deadline < models.utcnow()
    in_doubt = op.status == states.FAILED
    if in_doubt and not host_alive:
        # Asking a host that sends no heartbeat only costs a timeout.
        if at_deadline:
            _extend(op.id, seconds=CONF.conductor.host_down_time)
        return 'host-down'
    try:
        state = agent_versions.client().get_operation(
            ctxt, op.host, op.id, timeout=CONF.conductor.agent_call_timeout)
    except Exception as exc:
        LOG.warning('Agent of %(host)s did not answer about operation '
                    '%(op)s: %(error)s', {'host': op.host, 'op': op.id,
                                         'error': exc.__class__.__name__})
        if not at_deadline:
            return 'no-answer'
        if op.status in states.ACTIVE and op.created_at is not None and \
                models.utcnow() - op.created_at < datetime.timedelta(
                    seconds=CONF.conductor.operation_timeout):
            # An early check (a broker restarting, say): ask again soon;
            # in doubt only once operation_timeout has passed.
            _extend(op.id, seconds=CONF.conductor.task_receipt_timeout)
            return 'no-answer'
        _mark_in_doubt(op)
        return 'in-doubt'
    kind = (state or {}).get('state')
    if kind == 'done' and (state or {}).get('report'):
        LOG.info('Operation %(op)s: applying the report from the agent\'s '
                 'journal', {'op': op.id})
        reports.apply_and_acknowledge(ctxt, op.id, state['report'], op.host)
        return 'applied'
    if kind == 'running':
        if at_deadline:
            _extend(op.id)
        return 'running'
    if kind == 'abandoned':
        # A conductor gave up on it and died before failing it.
        _fail_lost(ctxt, op)
        return 'failed'
    # The agent never saw the task.
    if in_doubt or (at_deadline and op.attempts + 1 >=
                    CONF.conductor.max_task_attempts):
        return give_up(ctxt, op)
    if at_deadline:
        op = _extend(op.id, status=states.RUNNING, attempts=op.attempts + 1,
                     seconds=CONF.conductor.task_receipt_timeout)
        if op is None:
            return 'ended'
        LOG.warning('Operation %(op)s never reached %(host)s; sending it '
                    'again (attempt %(n)d)', {'op': op.id, 'host': op.host,
                                              'n': op.attempts + 1})
    else:
        LOG.warning('Operation %(op)s (%(status)s) is unknown to %(host)s; '
                    'sending it again', {'op': op.id, 'status': op.status,
                                         'host': op.host})
    dispatch.send_task(ctxt, op)
    return 'resent'


def _mark_in_doubt(op):
    _extend(op.id, status=states.FAILED, seconds=CONF.conductor.host_down_time,
            error=('The agent of host %s did not report this operation in '
                   'time and does not answer. The disk stays locked until '
                   'the agent reports what happened (it replays its journal '
                   'when it starts again).' % op.host))


def give_up(ctxt, op):
    """Abandon an operation its agent never saw: first in the agent's
    journal, so the task can no longer start there, then here.

    An agent that cannot be asked leaves the operation in doubt (the disk
    locked); one that had seen the operation after all answers how it
    stands, and that is applied instead.
    """
    try:
        state = agent_versions.client().abandon_operation(
            ctxt, op.host, op.id, timeout=CONF.conductor.agent_call_timeout)
    except rpc.messaging.RemoteError as exc:
        if exc.exc_type != 'UnsupportedVersion':
            LOG.warning('Agent of %(host)s could not abandon operation '
                        '%(op)s: %(error)s', {'host': op.host, 'op': op.id,
                                             'error': exc.value})
            _mark_in_doubt(op)
            return 'in-doubt'
        # An agent older than RPC 1.2: its expires_at guard remains.
        state = {'state': 'abandoned'}
    except rpc.messaging.RPCVersionCapError:
        # The same, known from its heartbeats (conductor.agent_versions).
        state = {'state': 'abandoned'}
    except Exception as exc:
        LOG.warning('Agent of %(host)s did not answer the abandonment of '
                    '%(op)s: %(error)s', {'host': op.host, 'op': op.id,
                                         'error': exc.__class__.__name__})
        _mark_in_doubt(op)
        return 'in-doubt'
    kind = (state or {}).get('state')
    if kind == 'done' and state.get('report'):
        reports.apply_and_acknowledge(ctxt, op.id, state['report'], op.host)
        return 'applied'
    if kind == 'running':
        _extend(op.id)
        return 'running'
    _fail_lost(ctxt, op)
    return 'failed'


def _fail_lost(ctxt, op):
    LOG.warning('Operation %(op)s abandoned: its task never reached '
                '%(host)s', {'op': op.id, 'host': op.host})
    dispatch.apply_report(op.id, {
        'status': states.FAILED, 'error_code': 'lost',
        'error': 'The task never reached the agent of host %s (%d '
                 'attempts); nothing was changed.'
                 % (op.host, op.attempts + 1)}, ctxt)
