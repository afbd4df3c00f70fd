"""``livesnap-conductor``: the REST API and the RPC server of the policy.

Several conductors may run against one database; each consumes reports
and heartbeats from topic ``livesnap-conductor``.  When one starts, it
asks the agents at once about every operation in flight
(``deadlines.reconcile_in_flight``) instead of waiting for deadlines.  The
API is served by the embedded waitress server (``conductor.api.server``);
with ``[api] enabled = false`` this process runs only the RPC server and
the periodic tasks, beside a WSGI server that serves ``conductor.wsgi``.
"""

import logging
import sys
import threading

from oslo_config import cfg

from conductor.api import auth as api_auth
from conductor.api import loader as api_loader
from conductor.api import server as api_server
from conductor.db import api as db
from conductor import deadlines
from conductor import manager
from conductor import metrics as conductor_metrics
from conductor import nova_listener
from conductor import periodic
from livesnap import metrics
from livesnap import rpc
from livesnap import service as common_service

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class ConductorService(object):

    def __init__(self, api=True):
        self.with_api = api
        self.rpc_server = None
        self.api_server = None
        self.metrics_server = None
        self.periodic = periodic.PeriodicRunner()
        self.nova_listener = None

    def start(self):
        """:raises: livesnap.service.ConfigurationError before anything
            starts if the API cannot work with its configuration.
        """
        if self.with_api:
            api_auth.check_config()
        if CONF.database.auto_migrate:
            db.sync()
        target = rpc.messaging.Target(topic=rpc.CONDUCTOR_TOPIC,
                                      server=CONF.conductor.host)
        self.rpc_server = rpc.get_server(target,
                                         [manager.ConductorManager()])
        self.rpc_server.start()
        if self.with_api and CONF.api.enabled:
            self.api_server = api_server.APIServer(
                api_loader.load_app(), CONF.api.host_ip, CONF.api.port,
                threads=CONF.api.threads, backlog=CONF.api.backlog,
                connection_limit=CONF.api.connection_limit,
                client_timeout=CONF.api.client_timeout,
                max_request_body_size=max(
                    CONF.api.max_request_body_size * 2, 1024 * 1024))
            self.api_server.start()
        self.periodic.start()
        if CONF.nova_notifications.enabled:
            self.nova_listener = nova_listener.NovaListener()
            self.nova_listener.start()
        conductor_metrics.register()
        self.metrics_server = metrics.serve(CONF.metrics.conductor_port)
        threading.Thread(target=self._reconcile, name='reconcile',
                         daemon=True).start()
        LOG.info('Conductor %(host)s started', {'host': CONF.conductor.host})

    @staticmethod
    def _reconcile():
        try:
            deadlines.reconcile_in_flight()
        except Exception:
            LOG.exception('Reconciling the operations in flight failed')

    def stop(self):
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.nova_listener is not None:
            self.nova_listener.stop()
        self.periodic.stop()
        if self.api_server is not None:
            self.api_server.stop()
        if self.rpc_server is not None:
            self.rpc_server.stop()
            self.rpc_server.wait()


def main(argv=None):
    return common_service.serve('livesnap-conductor', [ConductorService],
                                argv)


if __name__ == '__main__':
    sys.exit(main())
