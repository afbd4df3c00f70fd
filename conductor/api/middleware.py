"""oslo.middleware around the REST API: request ids and ``/healthcheck``.

* ``RequestId`` gives every request an id (``req-<uuid>``), answered in
  ``x-openstack-request-id`` (and ``X-Request-Id``, as before); a valid
  ``X-OpenStack-Request-ID`` sent by the caller is kept as the global
  request id.  Both travel in the RPC context to the agent and appear in
  the log lines of the conductor and of the agent for that request.
* ``Healthcheck`` answers ``GET``/``HEAD /healthcheck`` without
  credentials, from the backends in ``[healthcheck] backends``
  (``conductor.healthcheck``): 200 when all pass, 503 otherwise.
"""

from oslo_config import cfg
from oslo_middleware import healthcheck
from oslo_middleware import request_id

from conductor import healthcheck as livesnap_healthcheck

CONF = cfg.CONF

HEALTHCHECK_PATH = '/healthcheck'


class _HealthcheckRoute(object):
    """Sends ``/healthcheck`` to the healthcheck application, anything else
    to the API (the middleware answers every path it is given)."""

    def __init__(self, application):
        self.application = application
        livesnap_healthcheck.set_defaults(CONF)
        self.healthcheck = healthcheck.Healthcheck(None, CONF)

    def __call__(self, environ, start_response):
        if environ.get('PATH_INFO') == HEALTHCHECK_PATH and \
                environ.get('REQUEST_METHOD') in ('GET', 'HEAD'):
            return self.healthcheck(environ, start_response)
        return self.application(environ, start_response)


def wrap(application):
    """``application`` behind the healthcheck route and the request id."""
    return request_id.RequestId(_HealthcheckRoute(application), CONF)


def request_ids(environ):
    """The request's id and the caller's global request id (or None)."""
    return (environ.get(request_id.ENV_REQUEST_ID),
            environ.get(request_id.GLOBAL_REQ_ID))
