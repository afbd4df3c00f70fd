"""``[api] auth_strategy = keystone``: the real keystonemiddleware
auth_token in front of the API, with its own test fixture standing in for
Keystone's token validation (no Keystone is reachable here)."""

import json
import os
import urllib.error
import urllib.request

import pytest

from agent import images
from livesnap_tools import fixtures as ls_fixtures
from tests.functional import scenarios

ks_fixture = pytest.importorskip('keystonemiddleware.fixture')


@pytest.fixture
def keystone(conf, tmp_path, database):
    tokens = ks_fixture.AuthTokenFixture()
    tokens.setUp()
    tokens.add_token_data(token_id='ks-admin', project_id='admin',
                          user_id='u-admin', role_list=['admin'])
    tokens.add_token_data(token_id='ks-p1', project_id='p1',
                          user_id='u-1', role_list=['member', 'reader'])
    tokens.add_token_data(token_id='ks-p2', project_id='p2',
                          user_id='u-2', role_list=['member'])
    conf.set('auth_strategy', 'keystone', group='api')
    from keystonemiddleware import auth_token
    for group, opts in auth_token.list_opts():
        ls_fixtures.CONF.register_opts(opts, group=group)
    # Sent back in WWW-Authenticate on a 401.
    conf.set('www_authenticate_uri', 'http://keystone.invalid/identity',
             group='keystone_authtoken')
    dep = ls_fixtures.InProcessDeployment(conf, tmp_path)
    # Forget the token file: in keystone mode it must not matter.
    os.unlink(tmp_path / 'tokens.json')
    dep.start()
    yield dep
    dep.stop()
    tokens.cleanUp()


def _call(dep, method, path, headers, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(dep.base_url + path, data=data,
                                 method=method, headers=headers)
    if data is not None:
        req.add_header('Content-Type', 'application/json')
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_keystone_tokens_carry_project_and_roles(keystone):
    dep = keystone
    base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    dep.register_server = None  # the helper uses file tokens
    status, body = _call(dep, 'POST', '/v1/servers',
                         {'X-Auth-Token': 'ks-admin'},
                         {'server': {'id': 'srv1', 'name': 'a',
                                     'project_id': 'p1', 'host': 'hv1',
                                     'disks': [{'name': 'vda',
                                                'path': base}]}})
    assert status == 201, body
    status, body = _call(dep, 'GET', '/v1/servers', {'X-Auth-Token': 'ks-p1'})
    assert status == 200 and [s['id'] for s in body['servers']] == ['srv1']
    status, body = _call(dep, 'GET', '/v1/servers/srv1',
                         {'X-Auth-Token': 'ks-p2'})
    assert (status, body['error']['code']) == (404, 'not_found')
    status, body = _call(dep, 'POST', '/v1/servers/srv1/snapshots',
                         {'X-Auth-Token': 'ks-p1'},
                         {'snapshot': {'name': 's', 'disk': 'vda'}})
    assert status == 202, body
    # A member is no admin.
    status, body = _call(dep, 'POST', '/v1/servers',
                         {'X-Auth-Token': 'ks-p1'},
                         {'server': {'id': 'srv2', 'name': 'a',
                                     'project_id': 'p1', 'host': 'hv1',
                                     'disks': [{'name': 'vda',
                                                'path': base}]}})
    assert (status, body['error']['code']) == (403, 'forbidden')


@pytest.mark.parametrize('headers', [
    {},
    {'X-Auth-Token': 'not-a-token'},
    {'X-Auth-Token': 'p1-token'},   # a file token means nothing here
    # Identity headers forged by the client: the middleware strips them.
    {'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'p1',
     'X-Roles': 'admin'},
    {'X-Auth-Token': 'not-a-token', 'X-Identity-Status': 'Confirmed',
     'X-Project-Id': 'admin', 'X-Roles': 'admin'},
])
def test_keystone_refuses_without_a_valid_token(keystone, headers):
    for method, path in (('GET', '/v1/servers'),
                         ('GET', '/v1/operations')):
        status, body = _call(keystone, method, path, headers)
        assert (status, body['error']['code']) == (401, 'unauthorized')
    # The document stays public.
    status, body = _call(keystone, 'GET', '/v1/openapi.json', headers)
    assert status == 200 and 'paths' in body


def test_forged_headers_beside_a_valid_token_are_ignored(keystone):
    status, body = _call(keystone, 'GET', '/v1/servers', {
        'X-Auth-Token': 'ks-p2', 'X-Project-Id': 'admin',
        'X-Roles': 'admin'})
    assert status == 200 and body == {'servers': []}


def test_keystone_headers_authenticator_alone():
    """The app-side check: only Confirmed, project-scoped identities."""
    import webob

    from conductor.api import auth
    from conductor import exception
    authn = auth.KeystoneHeaders()

    def creds(**headers):
        return authn.from_request(webob.Request.blank('/', headers=headers))

    c = creds(**{'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'p1',
                 'X-Roles': 'member, reader', 'X-User-Id': 'u'})
    assert (c.project_id, c.roles, c.user_id) == ('p1', ['member',
                                                         'reader'], 'u')
    for bad in ({'X-Identity-Status': 'Invalid', 'X-Project-Id': 'p1'},
                {'X-Project-Id': 'p1', 'X-Roles': 'admin'},
                {'X-Identity-Status': 'Confirmed'},
                {'X-Identity-Status': 'confirmed', 'X-Project-Id': 'p1'}):
        with pytest.raises(exception.Unauthorized):
            creds(**bad)
