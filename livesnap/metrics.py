"""The Prometheus endpoint of a livesnap process (``[metrics]``).

Each process serves its own registry (prometheus_client's default one) at
``http://[metrics] host:PORT/metrics`` from a thread of its own; the
metrics themselves are defined in ``conductor.metrics`` and
``agent.metrics``.
"""

import logging

from oslo_config import cfg
import prometheus_client

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: Pauses are milliseconds long; the buckets go from 1 ms to 5 s.
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                 1.0, 2.5, 5.0)
#: Merges copy whole images: from 0.1 s to an hour.
MERGE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class MetricsServer(object):
    """prometheus_client's HTTP server, stoppable."""

    def __init__(self, port, host=None):
        self.host = host or CONF.metrics.host
        self.port = port
        self._server = None

    def start(self):
        """:raises: OSError if the port cannot be bound."""
        self._server, _thread = prometheus_client.start_http_server(
            self.port, addr=self.host)
        self.port = self._server.server_port
        LOG.info('Metrics served at http://%(host)s:%(port)d/metrics',
                 {'host': self.host, 'port': self.port})

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def serve(port):
    """Start a metrics server on ``port``; None if ``port`` is 0."""
    if not port:
        return None
    server = MetricsServer(port)
    server.start()
    return server
