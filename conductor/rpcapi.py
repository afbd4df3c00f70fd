"""Client side of the conductor RPC API (used by the agents).

Casts on topic ``livesnap-conductor`` with no server set, so any running
conductor may take any report: no conductor keeps state the others lack.

API version history:

* 1.0 - Initial version: report_operation, report_progress, heartbeat.
* 1.1 - report_operation takes the reporting agent's ``host``; the
        conductor acknowledges the report to it (``AgentAPI.ack_report``)
        once it has committed it.
* 1.2 - every method takes ``auth``: the sending host's signature of the
        message (``livesnap.hostkeys``); report_progress takes the
        sender's ``host``.  An agent with a host key sends 1.2, one
        without sends what it sent before.
"""

from livesnap import rpc

RPC_API_VERSION = '1.2'


class ConductorAPI(object):
    """:param signer: a ``livesnap.hostkeys.Signer``: every message is
        sent signed (version 1.2); None sends them unsigned, as before.
    """

    def __init__(self, signer=None):
        target = rpc.messaging.Target(topic=rpc.CONDUCTOR_TOPIC,
                                      version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=RPC_API_VERSION)
        self.signer = signer

    def _signed_cast(self, ctxt, method, **kwargs):
        """Cast ``method`` signed at version 1.2.  Signing happens here,
        when a message is sent, never inside a pause.
        """
        kwargs['auth'] = self.signer.sign(method, kwargs)
        self.client.prepare(version='1.2').cast(ctxt, method, **kwargs)

    def report_operation(self, ctxt, operation_id, report, host=None):
        """Final report of an operation: ``report['status']`` is
        ``succeeded`` or ``failed``, with steps, pause_ms and results.

        :param host: the reporting agent's host, to which the conductor
            acknowledges the report once applied; without it (1.0) no
            acknowledgement is sent.
        """
        if self.signer is not None:
            self._signed_cast(ctxt, 'report_operation',
                              operation_id=operation_id, report=report,
                              host=self.signer.host)
            return
        if host is None:
            self.client.prepare(version='1.0').cast(
                ctxt, 'report_operation', operation_id=operation_id,
                report=report)
            return
        self.client.prepare(version='1.1').cast(
            ctxt, 'report_operation', operation_id=operation_id,
            report=report, host=host)

    def report_progress(self, ctxt, operation_id, progress, steps=None):
        """Progress of a running operation (percent of a merge job)."""
        if self.signer is not None:
            self._signed_cast(ctxt, 'report_progress',
                              operation_id=operation_id, progress=progress,
                              steps=steps, host=self.signer.host)
            return
        self.client.prepare(version='1.0').cast(
            ctxt, 'report_progress', operation_id=operation_id,
            progress=progress, steps=steps)

    def heartbeat(self, ctxt, host, info):
        """The agent on ``host`` is alive."""
        if self.signer is not None:
            self._signed_cast(ctxt, 'heartbeat', host=host, info=info)
            return
        self.client.prepare(version='1.0').cast(
            ctxt, 'heartbeat', host=host, info=info)
