"""Authentication for the REST API, chosen by ``[api] auth_strategy``.

``tokens``: a JSON file maps each token to a project and roles,
``{"TOKEN": {"project_id": "p1", "roles": ["member"]}}``.  The file is
re-read when it changes.

``keystone``: keystonemiddleware's ``auth_token`` wraps the application
(configured by ``[keystone_authtoken]``), as in every OpenStack service: it
is the ``authtoken`` filter of the ``keystone`` pipeline in
``api-paste.ini`` (``conductor.api.loader``).  It
first strips any identity headers the client sent, validates the token with
Keystone, and sets ``X-Identity-Status``, ``X-Project-Id`` and ``X-Roles``.
It runs with ``delay_auth_decision`` so that the API itself answers the
refusal in its JSON error shape; only ``X-Identity-Status: Confirmed`` with a
project scope is let through.

In either mode a request without valid credentials never reaches a
controller (only the OpenAPI document is public), and Keystone's default
role implications are applied to the roles a token carries (``admin``
implies ``member``, which implies ``reader``: see :data:`IMPLIED_ROLES`), so
the policy's ``role:reader`` means the same with a token file as with a
Keystone whose implied roles were not set up.

``keystone`` needs ``[keystone_authtoken] www_authenticate_uri`` (the
public Keystone endpoint sent back in ``WWW-Authenticate`` on a 401):
without it the middleware fails on the first refused request, so
:func:`check_config` refuses to start instead.
"""

import hmac
import json
import os
import threading

from oslo_config import cfg

from conductor import exception
from conductor import rbac
from livesnap import context
from livesnap import service as common_service

CONF = cfg.CONF

#: Keystone's default role implications (``keystone-manage bootstrap``).
IMPLIED_ROLES = {'admin': ('member', 'reader'), 'member': ('reader',)}


def with_implied_roles(roles):
    """``roles`` and every role they imply, in a stable order."""
    out = []
    for role in roles:
        for r in (role,) + IMPLIED_ROLES.get(role, ()):
            if r not in out:
                out.append(r)
    return out


class Credentials(context.RequestContext):
    """Who is asking: a project, a user and their roles (implied ones
    included), as the request's oslo.context context.

    What the caller may do is the policy's to say (``conductor.rbac``);
    ``is_admin`` is its ``admin_api`` rule, asked when first read.  The API
    gives the context the request's ids and microversion and makes it the
    thread's current one (``conductor.api.app``); being made does not.
    """

    def __init__(self, project_id, roles, user_id=None, **kwargs):
        kwargs.setdefault('overwrite', False)
        kwargs.setdefault('is_admin', None)
        super().__init__(project_id=project_id,
                         roles=with_implied_roles(roles), user_id=user_id,
                         **kwargs)

    def check_is_admin(self):
        return rbac.check(self, 'admin_api')


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
            scoped to a project.
        """
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


def check_config():
    """Refuse a configuration the API cannot serve with.

    :raises: livesnap.service.ConfigurationError with ``auth_strategy =
        keystone`` and no ``[keystone_authtoken] www_authenticate_uri``:
        keystonemiddleware would answer the first request without a valid
        token with a 500.
    """
    if CONF.api.auth_strategy != 'keystone':
        return
    from keystonemiddleware import auth_token
    for group, opts in auth_token.list_opts():
        CONF.register_opts(opts, group=group)
    section = CONF.keystone_authtoken
    if not section.www_authenticate_uri:
        raise common_service.ConfigurationError(
            '[api] auth_strategy = keystone needs [keystone_authtoken] '
            'www_authenticate_uri: the public Keystone endpoint that '
            'clients are sent to (in WWW-Authenticate) when their token is '
            'missing or not valid, e.g. https://keystone.example.com/'
            'identity. Set it (and the other [keystone_authtoken] options '
            'that validate tokens), or use auth_strategy = tokens.')


def make_authenticator():
    check_config()
    if CONF.api.auth_strategy == 'keystone':
        return KeystoneHeaders()
    return TokenFile(CONF.api.token_file)
