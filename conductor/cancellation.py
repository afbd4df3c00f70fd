"""An administrator cancels an operation.

Only a merge can be cancelled, and only while its data is being copied
(the block job runs while the VM runs, and can take long for a large
snapshot or a slow disk): the agent drops the job and the operation fails
with ``cancelled``, leaving every image and the tree as they were, so the
snapshot can be deleted again later.  Everything else takes milliseconds
of work or has passed the point where stopping would leave less than it
found (the paused section of a merge is never interrupted), and runs to
its end.
"""

import logging

from oslo_config import cfg

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import states
from livesnap import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def cancel(ctxt, operation_id):
    """Ask the operation's agent to stop its copy.

    The operation then ends through the agent's report, as any other.
    :raises: NotFound, NotCancellable (also when the host's agent is
        too old to cancel), HostDown
    """
    with db.transaction() as s:
        op = s.get(models.Operation, operation_id)
        if op is None:
            raise exception.NotFound('Operation %s not found.'
                                     % operation_id)
        if op.status != states.RUNNING:
            raise exception.NotCancellable(
                operation=op.id, reason='it is %s, not running' % op.status)
        if (op.action, op.mode) != ('delete', 'merge'):
            raise exception.NotCancellable(
                operation=op.id, reason='only a merge can be cancelled')
        host = op.host
        if not db.host_is_alive(s, host):
            raise exception.HostDown(host=host)
    try:
        answer = agent_versions.client().cancel_operation(
            ctxt, host, operation_id,
            timeout=CONF.conductor.agent_call_timeout)
    except rpc.messaging.RPCVersionCapError as exc:
        raise exception.NotCancellable(
            operation=operation_id,
            reason='the agent of its host serves RPC API %s, and '
                   'cancelling needs %s: upgrade the agent first'
                   % (exc.version_cap, exc.version))
    except Exception as exc:
        LOG.warning('Agent of %(host)s did not take the cancellation of '
                    '%(op)s: %(error)s', {'host': host, 'op': operation_id,
                                         'error': exc.__class__.__name__})
        raise exception.HostDown(host=host)
    if not (answer or {}).get('cancelling'):
        raise exception.NotCancellable(
            operation=operation_id,
            reason='its copy has ended (or not begun); it finishes on its '
                   'own in moments')
    LOG.warning('Operation %(op)s: cancellation asked of %(host)s',
                {'op': operation_id, 'host': host})
