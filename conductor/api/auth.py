"""Authentication for the REST API.

``[api] auth_strategy = tokens``: a JSON file maps each token to a project
and roles, ``{"TOKEN": {"project_id": "p1", "roles": ["member"]}}``.  The
file is re-read when it changes.  A request without a known token never
reaches a controller.
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

    def __init__(self, project_id, roles):
        self.project_id = project_id
        self.roles = list(roles)

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


def make_authenticator():
    return TokenFile(CONF.api.token_file)
