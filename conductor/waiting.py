"""Tenant operations that wait for the conductor's own work on a disk.

The rule: a tenant is never refused for work it did not ask for.  When a
tenant's create, delete or revert finds its disk busy with the conductor's
own deferred deletion (``requested_by: conductor``), it is accepted (202)
and recorded ``pending``, holding no lock and with no decision made yet.
When the disk is free, the oldest waiting operation starts: its decision
(the child count, the limits, the live image's position) is made then, on
rows read under the disk's lock, exactly as for a request that found the
disk free.  If it can no longer be done (the host went down, the chain got
too deep) it ends ``failed`` with the reason.  The conductor's own work on
a disk starts only when no tenant's operation waits for it.

At most one tenant operation waits per disk: a second request, or one that
finds the disk busy with a tenant's operation, is answered 409
``disk_busy`` as before.

Waiting operations are started by whoever frees the disk (the report of
the operation that held it, see ``dispatch.apply_report``) and, as a
backstop, by the periodic task; this module decides, and
``conductor.dispatch`` sends what it started.
"""

import logging

from conductor import actions
from conductor.db import api as db
from conductor import exception
from conductor import locking
from conductor import operations
from conductor import states

LOG = logging.getLogger(__name__)


def start_next(disk_id):
    """Start the disk's oldest waiting operation if the disk is free.

    :returns: (operation id, the :class:`operations.Outgoing` to
        dispatch) if its task is to be sent, (operation id, None) if it
        ended at once (a logical delete, or refused with its reason), or
        None if nothing started.
    """
    with db.transaction() as s:
        disk = locking.disk_for_update(s, disk_id)
        if disk is None or disk.operation_id is not None:
            return None
        op = db.queued_operation(s, disk_id)
        if op is None:
            return None
        try:
            send = actions.starter(op.action)(s, op, disk.server, disk)
        except exception.LivesnapException as exc:
            _refuse(s, op, exc)
            return op.id, None
        LOG.info('Operation %(op)s (%(action)s) waited for disk %(disk)s '
                 'and starts now', {'op': op.id, 'action': op.action,
                                    'disk': disk_id})
        return op.id, operations.outgoing(op) if send else None


def _refuse(session, op, exc):
    """End a waiting operation that can no longer be done, with why."""
    on_failure = actions.report_handlers(op.action)[1]
    op.error = '%s: %s' % (exc.code, exc)
    on_failure(session, op, {'status': states.FAILED, 'error': op.error,
                             'error_code': exc.code})
    operations.set_status(op, states.FAILED)
    LOG.warning('Waiting operation %(op)s (%(action)s) refused when it '
                'could start: %(error)s', {'op': op.id, 'action': op.action,
                                           'error': op.error})
