"""Operations whose report is late: ask the agent, re-send or give up.

No operation stays ``pending`` or ``running`` for ever.  When an
operation's deadline passes, the conductor asks the host's agent what its
journal says (``get_operation``, idempotent):

* **done**: the report was lost on the way; apply the journal's copy.
* **running**: the agent is still at it (a long merge); extend the deadline.
* **never seen**: the task was lost (a broker restart, say); send it again
  with a new deadline, up to ``[conductor] max_task_attempts`` times, then
  fail it and release the disk.  A late copy of the lost task is refused by
  the agent, because it carries the old ``expires_at``.
* **no answer** (the host is down): the operation is marked ``failed``
  with the reason, but the disk stays locked: the agent may have paused,
  pivoted or merged before it died, and only its journal knows.  The agent
  replays its journal when it starts and reports; that late report is then
  applied (see ``operations._in_doubt``), or, if it never saw the task, the
  disk is released.
"""

import datetime
import logging

from oslo_config import cfg
import sqlalchemy as sa

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models
from conductor import operations
from conductor import states
from livesnap import context

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def _overdue_ids():
    now = models.utcnow()
    with db.transaction() as s:
        late = s.scalars(
            sa.select(models.Operation.id)
            .where(models.Operation.status.in_(('pending', 'running')))
            .where(models.Operation.deadline < now))
        in_doubt = s.scalars(
            sa.select(models.Operation.id)
            .join(models.Disk, models.Disk.operation_id == models.Operation.id)
            .where(models.Operation.status == 'failed')
            .where(models.Operation.deadline < now))
        return list(late) + list(in_doubt)


def _extend(op_id, status=None, error=None, attempts=None, keep_lock=True):
    """Extend (and maybe change) an operation that has not ended.

    :returns: the operation, or None if it ended meanwhile (its report
        was applied while the agent was being asked): nothing is changed.
    """
    with db.transaction() as s:
        op = s.get(models.Operation, op_id, with_for_update=True)
        if op.status not in states.ACTIVE and not operations._in_doubt(s, op):
            return None
        if status is not None and not states.operation_may(op.status,
                                                           status):
            return None
        op.deadline = models.utcnow() + datetime.timedelta(
            seconds=CONF.conductor.operation_timeout)
        if status is not None:
            op.status = status
        if error is not None:
            op.error = error
        if attempts is not None:
            op.attempts = attempts
        return op


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


def check_one(op_id):
    ctxt = context.make()
    with db.transaction() as s:
        op = s.get(models.Operation, op_id)
        s.expunge(op)
    try:
        state = agent_rpcapi.AgentAPI().get_operation(
            ctxt, op.host, op.id, timeout=CONF.conductor.agent_call_timeout)
    except Exception as exc:
        LOG.warning('Agent of %(host)s did not answer about operation '
                    '%(op)s: %(error)s', {'host': op.host, 'op': op.id,
                                         'error': exc.__class__.__name__})
        _extend(op.id, status='failed', error=(
            'The agent of host %s did not report this operation in time '
            'and does not answer. The disk stays locked until the agent '
            'reports what happened (it replays its journal when it starts '
            'again).' % op.host))
        return 'in-doubt'
    if state and state.get('state') == 'done' and state.get('report'):
        LOG.info('Operation %(op)s: applying the report from the agent\'s '
                 'journal', {'op': op.id})
        operations.apply_report(op.id, state['report'], ctxt)
        return 'applied'
    if state and state.get('state') == 'running':
        _extend(op.id)
        return 'running'
    # The agent never saw the task.
    if op.status == 'failed' or op.attempts + 1 >= \
            CONF.conductor.max_task_attempts:
        operations.apply_report(op.id, {
            'status': 'failed', 'error_code': 'lost',
            'error': 'The task never reached the agent of host %s (%d '
                     'attempts); nothing was changed.'
                     % (op.host, op.attempts + 1)}, ctxt)
        return 'failed'
    op = _extend(op.id, status='running', attempts=op.attempts + 1)
    if op is None:
        return 'ended'
    LOG.warning('Operation %(op)s never reached %(host)s; sending it again '
                '(attempt %(n)d)', {'op': op.id, 'host': op.host,
                                    'n': op.attempts + 1})
    operations.send_task(ctxt, op)
    return 'resent'
