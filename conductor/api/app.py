"""The WSGI application of the REST API (``/v1``).

One place turns every failure into the JSON error shape
``{"error": {"code", "message"}}``: malformed JSON, schema violations and
bad query strings are 400, a missing or bad token 401, a policy refusal on
one's own object 403, an unknown or foreign object 404, a busy disk 409, a
too-large body 413, an ``Idempotency-Key`` reused for another request 422
(``conductor.idempotency``; its repeat while the first is processed is 409),
too many operations 429 (with ``Retry-After``), a down
host 503, a database that cannot be reached (or is full) 503 with
``Retry-After``.  Unexpected errors are logged with their trace and
answered 500 without it.

Everything a request carries is checked before a controller runs: path
parameters (an id that cannot exist is 404), the query string and the body
against the schemas in ``conductor.api.schemas``.  The OpenAPI document
(``GET /v1/openapi.json``) is the only thing served without credentials.
"""

import json
import logging
import re
import uuid

import jsonschema
import routes
import sqlalchemy.exc as sa_exc
import webob
import webob.dec
import webob.exc

from oslo_config import cfg

from conductor.api import auth
from conductor.api import controllers
from conductor.api import middleware
from conductor.api import openapi
from conductor.api import pagination
from conductor.api import schedules
from conductor.api import schemas
from conductor.api import versions
from conductor import exception
from conductor import idempotency
from livesnap import context
from livesnap import faults

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

_CONTROL = re.compile('[\x00-\x1f\x7f]')

#: The request header that makes a POST or DELETE repeatable, and the
#: header of an answer given again (``conductor.idempotency``).
IDEMPOTENCY_KEY = 'Idempotency-Key'
REPLAYED = 'Idempotent-Replayed'
_KEY = re.compile('^[\x20-\x7e]{1,255}\\Z')

#: (method, path, controller, action); ``None`` controller: public.
ROUTES = [
    ('GET', '/v1/openapi.json', None, 'openapi'),
    ('GET', '/v1/servers', 'servers', 'index'),
    ('POST', '/v1/servers', 'servers', 'create'),
    ('GET', '/v1/servers/{server_id}', 'servers', 'show'),
    ('DELETE', '/v1/servers/{server_id}', 'servers', 'delete'),
    ('GET', '/v1/servers/{server_id}/snapshots', 'snapshots', 'index'),
    ('POST', '/v1/servers/{server_id}/snapshots', 'snapshots', 'create'),
    ('GET', '/v1/snapshots/{snapshot_id}', 'snapshots', 'show'),
    ('DELETE', '/v1/snapshots/{snapshot_id}', 'snapshots', 'delete'),
    ('POST', '/v1/snapshots/{snapshot_id}/revert', 'snapshots', 'revert'),
    ('POST', '/v1/snapshots/{snapshot_id}/clone', 'snapshots', 'clone'),
    ('PATCH', '/v1/snapshots/{snapshot_id}', 'snapshot_protection',
     'update'),
    ('GET', '/v1/servers/{server_id}/snapshot-groups', 'snapshot_groups',
     'index'),
    ('POST', '/v1/servers/{server_id}/snapshot-groups', 'snapshot_groups',
     'create'),
    ('GET', '/v1/snapshot-groups/{group_id}', 'snapshot_groups', 'show'),
    ('DELETE', '/v1/snapshot-groups/{group_id}', 'snapshot_groups',
     'delete'),
    ('POST', '/v1/snapshot-groups/{group_id}/revert', 'snapshot_groups',
     'revert'),
    ('GET', '/v1/policies', 'policies', 'index'),
    ('POST', '/v1/policies', 'policies', 'create'),
    ('GET', '/v1/policies/{policy_id}', 'policies', 'show'),
    ('PATCH', '/v1/policies/{policy_id}', 'policies', 'update'),
    ('DELETE', '/v1/policies/{policy_id}', 'policies', 'delete'),
    ('GET', '/v1/policies/{policy_id}/runs', 'policies', 'runs'),
    ('GET', '/v1/hosts', 'hosts', 'index'),
    ('GET', '/v1/hosts/{host}/domains', 'hosts', 'domains'),
    ('GET', '/v1/operations', 'operations', 'index'),
    ('GET', '/v1/operations/{operation_id}', 'operations', 'show'),
    ('POST', '/v1/operations/{operation_id}/cancel', 'operations', 'cancel'),
]

#: Paths of the version document (no credentials, outside the OpenAPI
#: document of /v1).
VERSION_PATHS = ('/', '/v1', '/v1/')

#: (controller, action) -> body schema / query string schema, of every
#: controller.
BODY_SCHEMAS = {**controllers.BODY_SCHEMAS, **schedules.BODY_SCHEMAS}
QUERY_SCHEMAS = {**controllers.QUERY_SCHEMAS, **schedules.QUERY_SCHEMAS}
# Every list in pagination.LISTS takes limit, marker, sort_key, sort_dir.
QUERY_SCHEMAS.update({key: pagination.query_schema(
    key, QUERY_SCHEMAS.get(key))
                      for key in pagination.LISTS})


def _routes():
    mapper = routes.Mapper()
    for method, path, controller, action in ROUTES:
        mapper.connect(path, controller=controller, action=action,
                       conditions={'method': [method]})
    return mapper


def _raw_path(req):
    """The path as received, for logs (it need not be valid UTF-8)."""
    return req.environ.get('PATH_INFO', '')[:256]


def error_response(status, code, message):
    resp = webob.Response(status=status, content_type='application/json',
                          charset='utf-8')
    resp.json_body = {'error': {'code': code, 'message': message}}
    return resp


def _read_body(req):
    if req.content_length and req.content_length > \
            CONF.api.max_request_body_size:
        raise exception.RequestTooLarge()
    raw = req.body_file.read(CONF.api.max_request_body_size + 1)
    if len(raw) > CONF.api.max_request_body_size:
        raise exception.RequestTooLarge()
    return raw


def _validate(instance, schema, what):
    try:
        schemas.validate(instance, schema)
    except jsonschema.ValidationError as exc:
        where = '/'.join(str(p) for p in exc.absolute_path) or what
        raise exception.BadRequest('Invalid %s at %s: %s'
                                   % (what, where, exc.message))


def _parse_body(req, schema):
    """The request's JSON body, checked against ``schema``.

    An action that takes no body (``schema`` None) accepts none, ``{}`` or
    ``null`` and refuses anything else, so nothing a client sends goes
    unchecked.
    """
    raw = _read_body(req)
    if schema is None:
        if not raw.strip():
            return None
        schema = schemas.empty_or_null
    elif not raw.strip():
        raise exception.BadRequest('A JSON request body is required.')
    try:
        body = json.loads(raw.decode('utf-8'))
        # Lone surrogates ("\ud800") parse but cannot be stored.
        json.dumps(body, ensure_ascii=False).encode('utf-8')
    except RecursionError:
        raise exception.BadRequest('The request body is nested too deeply.')
    except (UnicodeError, ValueError) as exc:
        raise exception.BadRequest('Malformed JSON in request body: %s'
                                   % exc)
    _validate(body, schema, 'request body')
    return body


def _parse_query(req, schema):
    try:
        items = list(req.GET.items())
    except UnicodeDecodeError:
        raise exception.BadRequest('The query string is not valid UTF-8.')
    params = {}
    for name, value in items:
        if name in params:
            raise exception.BadRequest('Query parameter %s is repeated.'
                                       % name[:64])
        params[name] = value
    _validate(params, schema, 'query string')
    return params


def _check_path_ids(match):
    for name, value in match.items():
        try:
            schemas.validate(value, schemas.path_id)
        except jsonschema.ValidationError:
            raise exception.NotFound('The resource could not be found.')


def _idempotency_key(req):
    """The request's ``Idempotency-Key`` (POST and DELETE), or None.

    :raises: BadRequest if it is empty, longer than 255 characters or not
        printable ASCII.
    """
    if req.method not in idempotency.METHODS:
        return None
    key = req.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not _KEY.match(key):
        raise exception.BadRequest(
            'The %s header must be 1 to 255 printable ASCII characters.'
            % IDEMPOTENCY_KEY)
    return key


def _json_response(status, payload):
    resp = webob.Response(status=status, content_type='application/json',
                          charset='utf-8')
    resp.json_body = payload
    return resp


def _idempotent(req, key, creds, req_id, route, body, call):
    """Run ``call`` (the controller) once per key of the caller's project
    (``conductor.idempotency``); a repeat gets the first answer, with
    ``Idempotent-Replayed: true``.
    """
    found = idempotency.begin(creds.project_id or '', key, req.method,
                              req.environ.get('PATH_INFO', ''),
                              idempotency.fingerprint(body))
    if isinstance(found, idempotency.Replay):
        status, payload = found.status, found.body
        if status is None:
            # Its conductor recorded the work but did not answer.
            status, payload = controllers.replay(
                creds, req_id, route, found.operation_ids)
            idempotency.finish(found.id, status, payload)
        LOG.info('Idempotency key of %(project)s replayed: %(status)s',
                 {'project': creds.project_id, 'status': status})
        resp = _json_response(status, payload)
        resp.headers[REPLAYED] = 'true'
        return resp
    try:
        with idempotency.claimed(found):
            status, payload = call()
    except BaseException:
        idempotency.release(found)
        raise
    # The work is recorded (and sent), its answer neither stored nor given.
    faults.point('api', 'answer', 'before', CONF.conductor.fault_points)
    idempotency.finish(found.id, status, payload)
    return _json_response(status, payload)


def _bind(creds, req, req_id):
    """The caller's context (``auth.Credentials``) with the request's ids
    and microversion (``creds.api_version``, what a controller branches
    on), made the thread's current context (logs, RPC contexts).
    """
    creds.request_id = req_id
    creds.global_request_id = middleware.request_ids(req.environ)[1]
    creds.api_version = req.environ[versions.ENVIRON_KEY]
    creds.update_store()
    return creds


class FaultWrapper(object):
    """The outermost filter of the pipeline (``faultwrap``): a failure in
    the middleware itself (e.g. Keystone misconfigured) is still answered
    in JSON, without its trace.
    """

    def __init__(self, application):
        self.application = application

    @classmethod
    def factory(cls, global_conf, **local_conf):
        """Paste filter factory."""
        return cls

    def __call__(self, environ, start_response):
        try:
            return self.application(environ, start_response)
        except Exception:
            LOG.exception('Unexpected error in the API middleware')
            resp = error_response(500, 'internal_error',
                                  'An unexpected error occurred.')
            return resp(environ, start_response)


class API(object):
    """The API as a WSGI application: the end of the pipeline of
    ``api-paste.ini`` (``conductor.api.loader``), behind the authentication
    middleware of the configured ``[api] auth_strategy``.
    """

    def __init__(self, authenticator=None):
        self.mapper = _routes()
        self.authenticator = authenticator or auth.make_authenticator()
        self.controllers = {
            'servers': controllers.Servers(),
            'snapshots': controllers.Snapshots(),
            'snapshot_groups': controllers.SnapshotGroups(),
            'operations': controllers.Operations(),
            'hosts': controllers.Hosts(),
            'policies': schedules.Policies(),
            'snapshot_protection': schedules.SnapshotProtection(),
        }

    def __call__(self, environ, start_response):
        return self.handle(environ, start_response)

    @webob.dec.wsgify
    def handle(self, req):
        req_id, global_id = middleware.request_ids(req.environ)
        req_id = req_id or 'req-' + str(uuid.uuid4())
        context.set_current(req_id, global_id)
        version = versions.MIN_VERSION
        try:
            version = versions.negotiate(req.headers)
            req.environ[versions.ENVIRON_KEY] = version
            resp = self._dispatch(req, req_id)
        except versions.NotAcceptable as exc:
            resp = error_response(406, 'version_not_acceptable', str(exc))
        except exception.LivesnapException as exc:
            resp = error_response(exc.status, exc.code, str(exc))
            retry_after = getattr(exc, 'retry_after', None)
            if retry_after is not None:
                resp.headers['Retry-After'] = str(retry_after)
        except (sa_exc.OperationalError, sa_exc.InterfaceError,
                sa_exc.DisconnectionError) as exc:
            # Unreachable, restarting, full or locked: nothing was changed
            # (the transaction did not commit); the client may try again.
            LOG.error('Database unavailable in %(method)s %(path)r: '
                      '%(error)s', {'method': req.method,
                                    'path': _raw_path(req),
                                    'error': str(exc).splitlines()[0]})
            resp = error_response(503, 'database_unavailable',
                                  'The database is unavailable; nothing '
                                  'was changed. Try again shortly.')
            resp.headers['Retry-After'] = '5'
        except Exception:
            LOG.exception('Unexpected error in %(method)s %(path)r',
                          {'method': req.method, 'path': _raw_path(req)})
            resp = error_response(500, 'internal_error',
                                  'An unexpected error occurred; the '
                                  'request id is %s.' % req_id)
        resp.headers['X-Request-Id'] = req_id
        versions.set_headers(resp, version)
        LOG.info('%(method)s %(path)r -> %(status)s',
                 {'method': req.method, 'path': _raw_path(req),
                  'status': resp.status_int})
        return resp

    def _dispatch(self, req, req_id):
        if _CONTROL.search(req.environ.get('PATH_INFO', '')):
            # No route has one; and the router's "$" would ignore a final
            # newline ("/v1/servers/srv1%0A" is not srv1).
            raise exception.NotFound('No such resource.')
        if req.method in ('GET', 'HEAD') and \
                req.environ.get('PATH_INFO') in VERSION_PATHS:
            return self._public(req, 'versions')
        try:
            match = self.mapper.match(environ=req.environ)
        except UnicodeDecodeError:
            match = None
        if match is None:
            if self.mapper.match(req.environ.get('PATH_INFO', '')):
                resp = error_response(405, 'method_not_allowed',
                                      'Method %s is not allowed here.'
                                      % req.method[:16])
                return resp
            raise exception.NotFound('No such resource.')
        match = dict(match)
        name = match.pop('controller')
        action = match.pop('action')
        if name is None:
            return self._public(req, action)
        creds = _bind(self.authenticator.from_request(req), req, req_id)
        _check_path_ids(match)
        controller = self.controllers[name]
        params = _parse_query(req, QUERY_SCHEMAS.get(
            (name, action), schemas.no_query))
        body = _parse_body(req, BODY_SCHEMAS.get((name, action)))

        def call():
            return getattr(controller, action)(
                creds, req_id, body=body, params=params, **match)

        key = _idempotency_key(req)
        if key is not None:
            return _idempotent(req, key, creds, req_id, (name, action),
                               body, call)
        status, payload = call()
        if (name, action) in pagination.LISTS:
            payload = pagination.paginate(req, params, payload,
                                          pagination.LISTS[(name, action)])
        resp = webob.Response(status=status, content_type='application/json',
                              charset='utf-8')
        resp.json_body = payload
        return resp

    def _public(self, req, action):
        _read_body(req)
        resp = webob.Response(status=200, content_type='application/json',
                              charset='utf-8')
        if action == 'versions':
            resp.json_body = versions.document(req)
        else:
            resp.json_body = openapi.document()
        return resp


def app_factory(global_conf, **local_conf):
    """Paste application factory: the API."""
    return API()
