"""Agents' reports: applied, then acknowledged to the agent.

An agent keeps each operation's report in its journal and sends it again
until a conductor acknowledges it.  The acknowledgement goes out only
after the report is committed (``dispatch.apply_report``), so a
conductor that dies while applying one leaves the agent to send it again
to another conductor, seconds later, instead of the operation waiting for
its deadline.  Applying a report twice is harmless: the second finds the
operation finished and changes nothing, and is acknowledged too.
"""

import logging

from oslo_config import cfg

from conductor import agent_versions
from conductor import dispatch
from livesnap import faults

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def apply_and_acknowledge(ctxt, operation_id, report, host=None):
    """Apply an agent's report and acknowledge it to ``host``.

    :param host: the agent to acknowledge to; None for an agent that does
        not take acknowledgements (RPC 1.0).
    :returns: True if this call changed the operation, False for a
        duplicate or an unknown operation (acknowledged all the same:
        there is nothing more to apply).
    :raises: whatever the database raises; then nothing is acknowledged
        and the agent sends the report again.
    """
    faults.point('report', 'apply', 'before', CONF.conductor.fault_points)
    applied = dispatch.apply_report(operation_id, report, ctxt)
    faults.point('report', 'apply', 'after', CONF.conductor.fault_points)
    if host:
        acknowledge(ctxt, host, operation_id)
    return applied


def acknowledge(ctxt, host, operation_id):
    """Tell the agent on ``host`` that the report is applied; a lost
    acknowledgement only means the report comes once more.
    """
    try:
        agent_versions.client().ack_report(ctxt, host, operation_id)
    except Exception as exc:
        LOG.warning('Could not acknowledge the report of %(op)s to '
                    '%(host)s: %(error)s', {'op': operation_id,
                                            'host': host, 'error': exc})
