"""Client side of the agent RPC API (used by the conductor).

Tasks are casts on topic ``livesnap-agent`` to ``server=<host>``; each task
carries the conductor's operation id and is idempotent, so re-sending one
is always safe.  The agent answers with a cast of
``ConductorAPI.report_operation``.

API version history:

* 1.0 - Initial version: create_snapshot, delete_snapshot, revert_disk,
        get_operation, server_running.
"""

from livesnap import rpc

RPC_API_VERSION = '1.0'


class AgentAPI(object):

    def __init__(self):
        target = rpc.messaging.Target(topic=rpc.AGENT_TOPIC,
                                      version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=RPC_API_VERSION)

    def _prepare(self, host, **kwargs):
        return self.client.prepare(server=host, version='1.0', **kwargs)

    def create_snapshot(self, ctxt, host, task):
        """Pause, pivot the disk onto ``task['new_image']``, resume."""
        self._prepare(host).cast(ctxt, 'create_snapshot', task=task)

    def delete_snapshot(self, ctxt, host, task):
        """Delete physically (``mode=physical``) or merge (``mode=merge``)."""
        self._prepare(host).cast(ctxt, 'delete_snapshot', task=task)

    def revert_disk(self, ctxt, host, task):
        """Put a new active image on top of a snapshot (server shut off)."""
        self._prepare(host).cast(ctxt, 'revert_disk', task=task)

    def server_running(self, ctxt, host, qmp_socket, timeout=10):
        """Whether a QEMU answers on ``qmp_socket`` on ``host``."""
        return self._prepare(host, timeout=timeout).call(
            ctxt, 'server_running', qmp_socket=qmp_socket)

    def get_operation(self, ctxt, host, operation_id, timeout=10):
        """Ask the agent what its journal says about an operation."""
        return self._prepare(host, timeout=timeout).call(
            ctxt, 'get_operation', operation_id=operation_id)
