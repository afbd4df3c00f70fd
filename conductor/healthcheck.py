"""oslo.middleware healthcheck backends: the database and the bus.

``GET /healthcheck`` (``conductor.api.middleware``) runs the backends in
``[healthcheck] backends``; livesnap's default is both of these.  Each
answers in at most a few seconds and says what failed, so a load balancer
takes a conductor out of rotation when it could not serve requests: the
API needs the database for everything and the bus for every operation.
The checks are entry points of the ``oslo.middleware.healthcheck`` group
(``livesnap_database``, ``livesnap_bus``), next to the library's own
``disable_by_file`` (for draining a node by hand).
"""

import kombu
from oslo_config import cfg
from oslo_middleware.healthcheck import pluginbase
import sqlalchemy as sa

from conductor.db import api as db
from livesnap.conf import healthcheck as healthcheck_conf
from livesnap import rpc

CONF = cfg.CONF

#: livesnap's default ``[healthcheck] backends``.
DEFAULT_BACKENDS = healthcheck_conf.DEFAULT_BACKENDS

#: Seconds the bus check waits for the broker.
BUS_TIMEOUT = 3.0


#: Register ``[healthcheck]`` with livesnap's defaults.
set_defaults = healthcheck_conf.set_defaults


class DatabaseCheck(pluginbase.HealthcheckBaseExtension):
    """``SELECT 1`` on the conductor's database."""

    def healthcheck(self, server_port):
        try:
            with db.reader() as conn:
                conn.execute(sa.text('SELECT 1'))
        except Exception as exc:
            return pluginbase.HealthcheckResult(
                available=False, reason='database unavailable',
                details=str(exc).splitlines()[0] if str(exc) else
                exc.__class__.__name__)
        return pluginbase.HealthcheckResult(available=True,
                                            reason='database OK')


def broker_urls(conf=CONF):
    """kombu URLs of the brokers in ``[DEFAULT] transport_url``; none for
    the in-memory bus (it lives in the process: always there).
    """
    url = rpc.messaging.TransportURL.parse(conf, conf.transport_url)
    if url.transport.startswith('kombu+memory'):
        return []
    urls = []
    for host in url.hosts:
        urls.append(kombu.Connection(
            hostname=host.hostname, port=host.port, userid=host.username,
            password=host.password, virtual_host=url.virtual_host or '/',
            transport='pyamqp').as_uri(include_password=True))
    return urls


class BusCheck(pluginbase.HealthcheckBaseExtension):
    """Connects to the message broker (any of the configured hosts)."""

    def healthcheck(self, server_port):
        urls = broker_urls()
        if not urls:
            return pluginbase.HealthcheckResult(
                available=True, reason='bus OK (in-memory)')
        errors = []
        ssl = CONF.oslo_messaging_rabbit.ssl \
            if 'oslo_messaging_rabbit' in CONF else False
        for url in urls:
            try:
                with kombu.Connection(url, connect_timeout=BUS_TIMEOUT,
                                      ssl=ssl) as conn:
                    conn.ensure_connection(max_retries=1,
                                           timeout=BUS_TIMEOUT)
            except Exception as exc:
                errors.append(str(exc) or exc.__class__.__name__)
                continue
            return pluginbase.HealthcheckResult(available=True,
                                                reason='bus OK')
        return pluginbase.HealthcheckResult(
            available=False, reason='message bus unavailable',
            details='; '.join(errors))
