"""oslo.middleware around the REST API.

The pipeline is ``etc/livesnap/api-paste.ini`` (``conductor.api.loader``);
its filters, outermost first (after ``faultwrap``, which answers a failure
of any of them with a JSON 500):

* ``CORS`` answers preflight requests and adds the CORS headers for the
  origins in ``[cors] allowed_origin`` (none by default: no CORS).
* ``HTTPProxyToWSGI`` applies ``X-Forwarded-Proto``/``X-Forwarded-Host``
  (or ``Forwarded``) of a TLS-terminating proxy, so that links (the
  ``next`` links of lists, the version document) carry the client's scheme
  and host; only with ``[oslo_middleware] enable_proxy_headers_parsing``.
* ``RequestBodySizeLimiter`` refuses bodies above ``[oslo_middleware]
  max_request_body_size`` (the outer bound; the API answers bodies above
  ``[api] max_request_body_size`` with its own JSON 413).

* ``RequestId`` gives every request an id (``req-<uuid>``), answered in
  ``x-openstack-request-id`` (and ``X-Request-Id``, as before); a valid
  ``X-OpenStack-Request-ID`` sent by the caller is kept as the global
  request id.  Both travel in the RPC context to the agent and appear in
  the log lines of the conductor and of the agent for that request.
* ``Healthcheck`` answers ``GET``/``HEAD /healthcheck`` without
  credentials, from the backends in ``[healthcheck] backends``
  (``conductor.healthcheck``): 200 when all pass, 503 otherwise.
* keystonemiddleware's ``auth_token`` with ``[api] auth_strategy =
  keystone`` (``conductor.api.auth``).

The library's own paste factories serve the proxy headers, the size limit
and the request id.  CORS and the healthcheck have livesnap's factories
here: both read livesnap's configuration (the files the process parsed,
``cfg.CONF``) with livesnap's defaults, and the healthcheck is a route in
the pipeline rather than an application of its own.
"""

from oslo_config import cfg
from oslo_middleware import cors
from oslo_middleware import healthcheck
from oslo_middleware import request_id

from conductor import healthcheck as livesnap_healthcheck

CONF = cfg.CONF

HEALTHCHECK_PATH = '/healthcheck'


class _HealthcheckRoute(object):
    """Sends ``/healthcheck`` to the healthcheck application, anything else
    to the API (the middleware answers every path it is given).
    """

    def __init__(self, application):
        self.application = application
        livesnap_healthcheck.set_defaults(CONF)
        self.healthcheck = healthcheck.Healthcheck(None, CONF)

    def __call__(self, environ, start_response):
        if environ.get('PATH_INFO') == HEALTHCHECK_PATH and \
                environ.get('REQUEST_METHOD') in ('GET', 'HEAD'):
            return self.healthcheck(environ, start_response)
        return self.application(environ, start_response)


#: Headers a browser client may send and read, beyond the simple ones.
CORS_ALLOW_HEADERS = ['X-Auth-Token', 'X-OpenStack-Request-ID',
                      'OpenStack-API-Version', 'Content-Type',
                      'Idempotency-Key']
CORS_EXPOSE_HEADERS = ['X-OpenStack-Request-ID', 'X-Request-Id',
                       'OpenStack-API-Version', 'Retry-After',
                       'Idempotent-Replayed']


def set_defaults():
    """livesnap's defaults of the ``[cors]`` options."""
    cors.set_defaults(
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_methods=['GET', 'PUT', 'POST', 'DELETE', 'PATCH', 'HEAD'])


def cors_factory(global_conf, **local_conf):
    """Paste filter factory: CORS with the ``[cors]`` options of
    ``cfg.CONF`` and livesnap's defaults (:func:`set_defaults`).
    """
    set_defaults()
    return lambda app: cors.CORS(app, CONF)


def healthcheck_factory(global_conf, **local_conf):
    """Paste filter factory: ``/healthcheck`` answered by oslo.middleware's
    healthcheck, every other request passed on.
    """
    return _HealthcheckRoute


def request_ids(environ):
    """The request's id and the caller's global request id (or None)."""
    return (environ.get(request_id.ENV_REQUEST_ID),
            environ.get(request_id.GLOBAL_REQ_ID))
