"""Operation records: recording, starting, status changes, progress.

An operation is the conductor's durable memory of one task: what was
decided, the task as sent (so it can be re-sent unchanged), the agent's
steps with their timings, and how it ended.  This module is the records'
floor: the flows (``creation``, ``deletion``, ...) build on it and return
what is to be sent (:class:`Outgoing`); ``conductor.dispatch`` sends it
and applies the agents' reports, under a row lock and only once,
whichever conductor receives them.

An operation that starts at once is recorded ``running`` in the same
transaction that takes its disk's lock, before its task is cast, so a fast
agent's report can never be overwritten by a later "running".  Every
status change is checked against ``conductor.states``.  A tenant's
operation that finds its disk busy with the conductor's own deferred work
is recorded ``pending`` and started (``conductor.waiting``) when the disk
is free.
"""

import collections
import copy
import datetime
import logging
import time
import uuid

from oslo_config import cfg
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import idempotency
from conductor import locking
from conductor import notifications
from conductor import states

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: ``requested_by`` of an operation a tenant asked for through the API.
TENANT = 'tenant'
#: ... of one a snapshot policy's run started (``conductor.schedule_runner``:
#: its snapshots, and the deletions that prune them).
POLICY = 'policy'
#: ... of the conductor's own deferred work (``conductor.deletion``).
CONDUCTOR = 'conductor'
#: Who may ask for an operation.
REQUESTERS = (TENANT, POLICY, CONDUCTOR)


def new_id():
    return str(uuid.uuid4())


#: a server's unregistering (``conductor.unregister``)
SERVER_DELETE = 'server.delete'


def _check_not_deleting(session, server):
    """:raises: Conflict if ``server`` is being unregistered (no new work
    starts on it; the deletes of its snapshots are its own).
    """
    running = session.scalars(
        sa.select(models.Operation.id)
        .where(models.Operation.server_id == server.id,
               models.Operation.action == SERVER_DELETE,
               models.Operation.status.in_(states.ACTIVE))).first()
    if running is not None:
        raise exception.Conflict('Server %s is being deleted (operation %s).'
                                 % (server.id, running))


def record(session, operation_id, action, server, disk, snapshot_id=None,
         mode=None, task=None, prior_status=None, requested_by=TENANT,
         status=None):
    """Record an operation; ``pending`` unless a status is given.

    An operation with a task must hold its disk's lock: use ``start``.
    """
    if action not in ('delete', SERVER_DELETE):
        _check_not_deleting(session, server)
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
    idempotency.attach(session, operation_id)
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


def first_deadline():
    """When to first ask the agent about a task just sent: soon, so a task
    lost on the way is sent again in seconds (see ``deadlines``).
    """
    return models.utcnow() + datetime.timedelta(
        seconds=CONF.conductor.task_receipt_timeout)


class Outgoing(collections.namedtuple('Outgoing',
                                      'id host action task requested_by')):
    """A started operation's task as read in the transaction that started
    it (see :func:`outgoing`), to cast once that transaction committed
    without reading the operation again.
    """


def outgoing(op):
    """What ``conductor.dispatch.send`` casts for ``op``, which was just
    started
    (``lock_disk_and_start``) in the caller's transaction.
    """
    return Outgoing(op.id, op.host, op.action, copy.deepcopy(op.task),
                    op.requested_by)


def apply_progress(operation_id, progress):
    """Record a running operation's progress (never after it ended)."""
    with db.transaction() as s:
        s.execute(
            sa.update(models.Operation)
            .where(models.Operation.id == operation_id)
            .where(models.Operation.status == states.RUNNING)
            .values(progress=float(progress))
            .execution_options(synchronize_session=False))
