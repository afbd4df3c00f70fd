"""Authentication for the REST API, chosen by ``[api] auth_strategy``.

``tokens``: a JSON file maps each token to a project and roles,
``{"TOKEN": {"project_id": "p1", "roles": ["member"]}}``.  The file is
re-read when it changes.

``keystone``: keystonemiddleware's ``auth_token`` wraps the application
(configured by ``[keystone_authtoken]``), as in every OpenStack service.  It
first strips any identity headers the client sent, validates the token with
Keystone, and sets ``X-Identity-Status``, ``X-Project-Id`` and ``X-Roles``.
It runs with ``delay_auth_decision`` so that the API itself answers the
refusal in its JSON error shape; only ``X-Identity-Status: Confirmed`` with a
project scope is let through.

In either mode a request without valid credentials never reaches a
controller (only the OpenAPI document is public).
"""

import hmac
import json
import os
import threading

from oslo_config import cfg

from conductor import exception

CONF = cfg.CONF


class Credentials(object):
    """Who is asking: a project and its roles."""

    def __init__(self, project_id, roles, user_id=None):
        self.project_id = project_id
        self.roles = list(roles)
        self.user_id = user_id

    @property
    def is_admin(self):
        return 'admin' in self.roles

    @property
    def scope(self):
        """The project filter for database queries; None means all."""
        return None if self.is_admin else self.project_id


class TokenFile(object):

    def __init__(self, path):
        self.path = path
        self._mtime = None
        self._tokens = {}
        self._lock = threading.Lock()

    def _load(self):
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            self._tokens, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        with open(self.path) as f:
            data = json.load(f)
        self._tokens = {str(k): v for k, v in data.items()
                        if isinstance(v, dict) and v.get('project_id')}
        self._mtime = mtime

    def from_request(self, req):
        return self.authenticate(req.headers.get('X-Auth-Token'))

    def authenticate(self, token):
        """:raises: Unauthorized unless ``token`` is in the file."""
        if not token:
            raise exception.Unauthorized(
                'Authentication required: send a token in X-Auth-Token.')
        with self._lock:
            self._load()
            tokens = self._tokens
        for known, entry in tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return Credentials(entry['project_id'],
                                   entry.get('roles') or [])
        raise exception.Unauthorized('The token is not valid.')


class KeystoneHeaders(object):
    """Credentials from the headers keystonemiddleware has validated."""

    def from_request(self, req):
        """:raises: Unauthorized unless the token was confirmed and is
            scoped to a project."""
        env = req.environ
        if env.get('HTTP_X_IDENTITY_STATUS') != 'Confirmed':
            raise exception.Unauthorized(
                'Authentication required: send a valid Keystone token in '
                'X-Auth-Token.')
        project_id = env.get('HTTP_X_PROJECT_ID')
        if not project_id:
            raise exception.Unauthorized(
                'The token is not scoped to a project.')
        roles = [r.strip() for r in env.get('HTTP_X_ROLES', '').split(',')
                 if r.strip()]
        return Credentials(project_id, roles,
                           user_id=env.get('HTTP_X_USER_ID'))


def make_authenticator():
    if CONF.api.auth_strategy == 'keystone':
        return KeystoneHeaders()
    return TokenFile(CONF.api.token_file)


def wrap(app):
    """Put the authentication middleware of the configured mode around
    ``app`` (a WSGI callable); ``tokens`` needs none."""
    if CONF.api.auth_strategy != 'keystone':
        return app
    from keystonemiddleware import auth_token
    return auth_token.AuthProtocol(app, {'oslo_config_config': CONF,
                                         'delay_auth_decision': 'true'})
