"""The WSGI application of the REST API (``/v1``).

One place turns every failure into the JSON error shape
``{"error": {"code", "message"}}``: malformed JSON and schema violations
are 400, a missing or bad token 401, an unknown or foreign object 404, a
busy disk 409, a down host 503.  Unexpected errors are logged with their
trace and answered 500 without it.
"""

import json
import logging
import uuid

import jsonschema
import routes
import webob
import webob.dec
import webob.exc

from oslo_config import cfg

from conductor.api import auth
from conductor.api import controllers
from conductor import exception

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def _routes():
    mapper = routes.Mapper()

    def add(path, controller, action, method):
        mapper.connect(path, controller=controller, action=action,
                       conditions={'method': [method]})

    add('/v1/servers', 'servers', 'index', 'GET')
    add('/v1/servers', 'servers', 'create', 'POST')
    add('/v1/servers/{server_id}', 'servers', 'show', 'GET')
    add('/v1/servers/{server_id}/snapshots', 'snapshots', 'index', 'GET')
    add('/v1/servers/{server_id}/snapshots', 'snapshots', 'create', 'POST')
    add('/v1/snapshots/{snapshot_id}', 'snapshots', 'show', 'GET')
    add('/v1/snapshots/{snapshot_id}', 'snapshots', 'delete', 'DELETE')
    add('/v1/snapshots/{snapshot_id}/revert', 'snapshots', 'revert', 'POST')
    add('/v1/operations', 'operations', 'index', 'GET')
    add('/v1/operations/{operation_id}', 'operations', 'show', 'GET')
    return mapper


def error_response(status, code, message):
    resp = webob.Response(status=status, content_type='application/json',
                          charset='utf-8')
    resp.json_body = {'error': {'code': code, 'message': message}}
    return resp


def _parse_body(req, schema):
    if req.content_length and req.content_length > \
            CONF.api.max_request_body_size:
        raise exception.RequestTooLarge()
    raw = req.body_file.read(CONF.api.max_request_body_size + 1)
    if len(raw) > CONF.api.max_request_body_size:
        raise exception.RequestTooLarge()
    if schema is None:
        return None
    if not raw.strip():
        raise exception.BadRequest('A JSON request body is required.')
    try:
        body = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as exc:
        raise exception.BadRequest('Malformed JSON in request body: %s'
                                   % exc)
    try:
        jsonschema.validate(body, schema)
    except jsonschema.ValidationError as exc:
        where = '/'.join(str(p) for p in exc.absolute_path) or 'body'
        raise exception.BadRequest('Invalid request body at %s: %s'
                                   % (where, exc.message))
    return body


class API(object):

    def __init__(self, authenticator=None):
        self.mapper = _routes()
        self.authenticator = authenticator or auth.make_authenticator()
        self.controllers = {
            'servers': controllers.Servers(),
            'snapshots': controllers.Snapshots(),
            'operations': controllers.Operations(),
        }

    @webob.dec.wsgify
    def __call__(self, req):
        req_id = 'req-' + str(uuid.uuid4())
        try:
            resp = self._dispatch(req, req_id)
        except exception.LivesnapException as exc:
            resp = error_response(exc.status, exc.code, str(exc))
        except Exception:
            LOG.exception('Unexpected error in %(method)s %(path)s',
                          {'method': req.method, 'path': req.path})
            resp = error_response(500, 'internal_error',
                                  'An unexpected error occurred; the '
                                  'request id is %s.' % req_id)
        resp.headers['X-Request-Id'] = req_id
        LOG.info('%(method)s %(path)s -> %(status)s',
                 {'method': req.method, 'path': req.path_qs,
                  'status': resp.status_int})
        return resp

    def _dispatch(self, req, req_id):
        match = self.mapper.match(environ=req.environ)
        if match is None:
            if self.mapper.match(req.path_info):
                return error_response(405, 'method_not_allowed',
                                      'Method %s is not allowed on %s.'
                                      % (req.method, req.path))
            raise exception.NotFound('No such resource: %s.' % req.path)
        creds = self.authenticator.authenticate(
            req.headers.get('X-Auth-Token'))
        match = dict(match)
        controller = self.controllers[match.pop('controller')]
        action = match.pop('action')
        schema = controllers.BODY_SCHEMAS.get(
            (type(controller).__name__.lower(), action))
        body = _parse_body(req, schema)
        params = dict(req.GET)
        status, payload = getattr(controller, action)(
            creds, req_id, body=body, params=params, **match)
        resp = webob.Response(status=status, content_type='application/json',
                              charset='utf-8')
        resp.json_body = payload
        return resp
