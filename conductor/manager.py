"""Server side of the conductor RPC API: thin endpoints for the agents.

See ``conductor.rpcapi`` for the version history.
"""

import logging

# The policy modules register how each action's report is applied.
from conductor import deletion  # noqa: F401
from conductor import hosts
from conductor import operations
from conductor import reports
from conductor import revert  # noqa: F401
from conductor import rpcapi
from conductor import snapshots  # noqa: F401
from livesnap import rpc

LOG = logging.getLogger(__name__)


class ConductorManager(object):

    target = rpc.messaging.Target(version=rpcapi.RPC_API_VERSION)

    def report_operation(self, ctxt, operation_id, report, host=None):
        if not isinstance(report, dict) or not isinstance(operation_id, str):
            LOG.warning('Malformed report for %(op)s ignored',
                        {'op': operation_id})
            return
        if not isinstance(host, str):
            host = None
        reports.apply(ctxt, operation_id, report, host)

    def report_progress(self, ctxt, operation_id, progress, steps=None):
        operations.apply_progress(operation_id, progress)

    def heartbeat(self, ctxt, host, info):
        hosts.heartbeat(host, info or {})
