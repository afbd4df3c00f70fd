"""Server side of the conductor RPC API: thin endpoints for the agents.

Each endpoint checks its arguments and calls the one module that does the
work: ``reports`` (which applies a report through ``dispatch`` and the
explicit table in ``actions`` and acknowledges it), ``operations``
(progress), ``hosts`` (heartbeats).  Before any of them, ``hostauth``
checks that the message comes from the host it speaks for (1.2: signed
with that host's key).  See ``conductor.rpcapi`` for the version history.
"""

import logging

from conductor import hostauth
from conductor import hosts
from conductor import operations
from conductor import reports
from conductor import rpcapi
from livesnap import rpc

LOG = logging.getLogger(__name__)


class ConductorManager(object):

    target = rpc.messaging.Target(version=rpcapi.RPC_API_VERSION)

    def report_operation(self, ctxt, operation_id, report, host=None,
                         auth=None):
        if not isinstance(report, dict) or not isinstance(operation_id, str):
            LOG.warning('Malformed report for %(op)s ignored',
                        {'op': operation_id})
            return
        if not isinstance(host, str):
            host = None
        args = {'operation_id': operation_id, 'report': report,
                'host': host}
        if not hostauth.check('report_operation', args, auth, host,
                              operation_id):
            return
        reports.apply_and_acknowledge(ctxt, operation_id, report, host)

    def report_progress(self, ctxt, operation_id, progress, steps=None,
                        host=None, auth=None):
        args = {'operation_id': operation_id, 'progress': progress,
                'steps': steps, 'host': host}
        if not hostauth.check('report_progress', args, auth, host,
                              operation_id):
            return
        operations.apply_progress(operation_id, progress)

    def heartbeat(self, ctxt, host, info, auth=None):
        if not hostauth.check('heartbeat', {'host': host, 'info': info},
                              auth, host):
            return
        hosts.record_heartbeat(host, info or {})
