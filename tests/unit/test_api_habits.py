"""Pagination of every list, microversions, the version document, CORS,
proxy headers and the body size limit of the API pipeline."""

import json
import os
import urllib.error
import urllib.request

from oslo_config import cfg
from oslo_middleware import cors
import pytest
import webob

from agent import images
from conductor.api import loader as api_loader
from livesnap_tools import fixtures
from tests.functional import scenarios

CONF = cfg.CONF
SQLITE = pytest.mark.parametrize('database', ['sqlite'], indirect=True)


def _call(dep, method, path, headers=None, data=None, token='p1-token'):
    """(status, headers, json or None)."""
    req = urllib.request.Request(dep.base_url + path, data=data,
                                 method=method, headers=headers or {})
    if token:
        req.add_header('X-Auth-Token', token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw or b'null')
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return exc.code, exc.headers, body


@pytest.fixture
def world(inprocess):
    """srv1, srv2, srv3 of p1; srv1 has two snapshots."""
    dep = inprocess
    for server in ('srv1', 'srv2', 'srv3'):
        base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server)
        images.create_base(base, 4 * scenarios.MiB)
        dep.register_server(server, base, project='p1')
    for name in ('s1', 's2'):
        _, op = scenarios.create_snapshot(dep, 'srv1', name)
        assert op['status'] == 'succeeded', op
    return dep


def _pages(dep, path, key, limit, token='p1-token'):
    """Every item of a list, following next links ``limit`` at a time."""
    sep = '&' if '?' in path else '?'
    url = '%s%slimit=%d' % (path, sep, limit)
    out = []
    while url:
        status, _, body = _call(dep, 'GET', url, token=token)
        assert status == 200, body
        assert len(body[key]) <= limit
        out += body[key]
        links = body.get('%s_links' % key)
        url = None
        if links:
            assert links[0]['rel'] == 'next'
            url = links[0]['href'][len(dep.base_url):]
    return out


@SQLITE
@pytest.mark.parametrize('path,key,token', [
    ('/v1/servers', 'servers', 'p1-token'),
    ('/v1/servers/srv1/snapshots', 'snapshots', 'p1-token'),
    ('/v1/operations', 'operations', 'p1-token'),
    ('/v1/hosts', 'hosts', 'admin-token'),
])
def test_every_list_pages_to_the_same_items(world, path, key, token):
    dep = world
    whole = dep.ok('GET', path, token=token)
    assert '%s_links' % key not in whole

    def ids(items):   # hosts have no id (and their heartbeat moves)
        return [item.get('id', item.get('name')) for item in items]
    for limit in (1, 2):
        assert ids(_pages(dep, path, key, limit, token)) == ids(whole[key])


@SQLITE
def test_policies_and_runs_page(world):
    dep = world
    ids = [dep.ok('POST', '/v1/policies', {'policy': {
        'server_id': 'srv1', 'name': 'p%d' % i,
        'interval': 3600,
        'retention': {'keep_last': 3}}}, status=201)['policy']['id']
        for i in range(3)]
    listed = [p['id'] for p in _pages(dep, '/v1/policies', 'policies', 2)]
    assert sorted(listed) == sorted(ids)
    status, _, body = _call(dep, 'GET',
                            '/v1/policies/%s/runs?limit=1' % ids[0])
    assert status == 200 and body['runs'] == []


@SQLITE
def test_snapshot_groups_page(world):
    dep = world
    path = '/v1/servers/srv2/snapshot-groups'
    for name in ('g1', 'g3', 'g2'):
        out = dep.ok('POST', path, {'snapshot_group': {'name': name}},
                     status=202)
        op = dep.wait_operation(out['operation']['id'])
        assert op['status'] == 'succeeded', op
    whole = dep.ok('GET', path)
    assert 'snapshot_groups_links' not in whole
    ids = [g['id'] for g in whole['snapshot_groups']]
    assert len(ids) == 3
    for limit in (1, 2):
        assert [g['id'] for g in _pages(
            dep, path, 'snapshot_groups', limit)] == ids
    names = [g['name'] for g in dep.ok(
        'GET', path + '?sort_key=name&sort_dir=desc')['snapshot_groups']]
    assert names == ['g3', 'g2', 'g1']
    rest = dep.ok('GET', '%s?marker=%s' % (path, ids[0]))
    assert [g['id'] for g in rest['snapshot_groups']] == ids[1:]
    for query in ('marker=nosuch', 'sort_key=project_id', 'limit=0'):
        status, _, body = _call(dep, 'GET', path + '?' + query)
        assert status == 400, (query, body)


@SQLITE
def test_host_domains_page(world):
    """The agent lists every domain (one RPC call); the API pages them."""
    dep = world
    vms = [{'name': 'vm%d' % i, 'uuid': '0b5ab3a1-0000-0000-0000-%012d' % i,
            'running': bool(i % 2), 'disks': []} for i in (1, 3, 2)]
    dep.agent.runner.driver.list_vms = lambda: vms
    path = '/v1/hosts/%s/domains' % fixtures.HOST
    whole = dep.ok('GET', path, token='admin-token')
    assert [d['name'] for d in whole['domains']] == ['vm1', 'vm3', 'vm2']
    assert 'domains_links' not in whole
    for limit in (1, 2):
        assert _pages(dep, path, 'domains', limit,
                      token='admin-token') == whole['domains']
    first = dep.ok('GET', path + '?sort_key=name&limit=2',
                   token='admin-token')
    assert [d['name'] for d in first['domains']] == ['vm1', 'vm2']
    href = first['domains_links'][0]['href']
    assert 'marker=%s' % vms[2]['uuid'] in href
    status, _, body = _call(dep, 'GET', path + '?marker=nosuch',
                            token='admin-token')
    assert status == 400, body


@SQLITE
def test_sort_and_marker(world):
    dep = world
    names = [s['name'] for s in dep.ok(
        'GET', '/v1/servers?sort_key=name&sort_dir=desc')['servers']]
    assert names == ['srv3', 'srv2', 'srv1']
    first = dep.ok('GET', '/v1/servers?sort_key=name&limit=1')
    assert [s['name'] for s in first['servers']] == ['srv1']
    href = first['servers_links'][0]['href']
    assert 'marker=srv1' in href and 'sort_key=name' in href
    rest = dep.ok('GET', '/v1/servers?sort_key=name&marker=srv1')
    assert [s['name'] for s in rest['servers']] == ['srv2', 'srv3']
    assert 'servers_links' not in rest


@SQLITE
@pytest.mark.parametrize('query', [
    'marker=nosuch', 'limit=0', 'limit=-1', 'limit=x', 'sort_key=nope',
    'sort_key=project_id', 'sort_dir=up', 'limit=1&limit=2'])
def test_bad_pagination_is_400(world, query):
    status, _, body = _call(world, 'GET', '/v1/servers?' + query)
    assert status == 400, body
    assert body['error']['code']


@SQLITE
def test_limit_is_capped(world, conf):
    conf.set('max_page_size', 2, group='api')
    body = world.ok('GET', '/v1/servers?limit=50')
    assert len(body['servers']) == 2 and body['servers_links']


@SQLITE
def test_default_page_size(world, conf):
    conf.set('default_page_size', 1, group='api')
    body = world.ok('GET', '/v1/servers')
    assert len(body['servers']) == 1
    assert 'limit=1' in body['servers_links'][0]['href']


# ------------------------------------------------------- microversions

@SQLITE
@pytest.mark.parametrize('sent,served', [
    (None, 'livesnap 1.0'),
    ('livesnap 1.0', 'livesnap 1.0'),
    ('livesnap 1.1', 'livesnap 1.1'),
    ('livesnap latest', 'livesnap 1.1'),
    ('compute 2.1', 'livesnap 1.0'),
])
def test_microversion_negotiation(inprocess, sent, served):
    headers = {'OpenStack-API-Version': sent} if sent else {}
    status, resp_headers, _ = _call(inprocess, 'GET', '/v1/servers',
                                    headers)
    assert status == 200
    assert resp_headers['OpenStack-API-Version'] == served
    assert 'OpenStack-API-Version' in resp_headers['Vary']


@SQLITE
@pytest.mark.parametrize('sent', ['livesnap 1.2', 'livesnap 2.0',
                                  'livesnap 0.9', 'livesnap one'])
def test_unsupported_microversion_is_406(inprocess, sent):
    status, headers, body = _call(inprocess, 'GET', '/v1/servers',
                                  {'OpenStack-API-Version': sent})
    assert status == 406, body
    assert body['error']['code'] == 'version_not_acceptable'
    assert headers['OpenStack-API-Version'] == 'livesnap 1.0'


@SQLITE
@pytest.mark.parametrize('path', ['/', '/v1'])
def test_version_document_without_credentials(inprocess, path):
    status, _, body = _call(inprocess, 'GET', path, token=None)
    assert status == 200
    [version] = body['versions']
    assert version['id'] == 'v1.0' and version['status'] == 'CURRENT'
    assert (version['min_version'], version['version']) == ('1.0', '1.1')
    assert version['links'][0]['href'] == inprocess.base_url + '/v1'


# ---------------------------------------------------------- middleware

@SQLITE
def test_proxy_headers_change_the_links(world, conf):
    conf.set('enable_proxy_headers_parsing', True,
                      group='oslo_middleware')
    status, _, body = _call(world, 'GET', '/v1/servers?limit=1', {
        'X-Forwarded-Proto': 'https',
        'X-Forwarded-Host': 'api.example.org'})
    assert status == 200
    assert body['servers_links'][0]['href'].startswith(
        'https://api.example.org/v1/servers?')
    status, _, body = _call(world, 'GET', '/', {
        'X-Forwarded-Proto': 'https'}, token=None)
    assert body['versions'][0]['links'][0]['href'].startswith('https://')


@SQLITE
def test_proxy_headers_ignored_unless_enabled(world):
    _, _, body = _call(world, 'GET', '/v1/servers?limit=1', {
        'X-Forwarded-Proto': 'https'})
    assert body['servers_links'][0]['href'].startswith('http://127.0.0.1')


def _cors_app(conf):
    """A new API pipeline (CORS reads its options when it is made)."""
    CONF.register_opts(cors.CORS_OPTS, 'cors')
    conf.set('allowed_origin', ['https://dash.example.org'], group='cors')
    app = api_loader.load_app()

    def call(method, path, headers):
        headers = dict(headers, **{'X-Auth-Token': 'p1-token'})
        resp = webob.Request.blank(path, method=method,
                                   headers=headers).get_response(app)
        return resp.status_int, resp.headers, None
    return call


@SQLITE
def test_cors_preflight(inprocess, conf):
    call = _cors_app(conf)
    status, headers, _ = call('OPTIONS', '/v1/servers', {
        'Origin': 'https://dash.example.org',
        'Access-Control-Request-Method': 'GET',
        'Access-Control-Request-Headers': 'X-Auth-Token'})
    assert status == 200
    assert headers['Access-Control-Allow-Origin'] == \
        'https://dash.example.org'
    assert 'X-Auth-Token'.lower() in \
        headers['Access-Control-Allow-Headers'].lower()
    status, headers, _ = call('GET', '/v1/servers', {
        'Origin': 'https://dash.example.org'})
    assert status == 200
    assert headers['Access-Control-Allow-Origin'] == \
        'https://dash.example.org'
    assert 'OpenStack-API-Version' in \
        headers['Access-Control-Expose-Headers']


@SQLITE
def test_cors_other_origin_gets_no_headers(inprocess, conf):
    call = _cors_app(conf)
    _, headers, _ = call('GET', '/v1/servers', {
        'Origin': 'https://evil.example.org'})
    assert 'Access-Control-Allow-Origin' not in headers


@SQLITE
def test_body_size_limit_of_the_pipeline(inprocess, conf):
    conf.set('max_request_body_size', 2048,
                      group='oslo_middleware')
    status, _, _ = _call(inprocess, 'POST', '/v1/servers',
                         {'Content-Type': 'application/json'},
                         data=b' ' * 4096)
    assert status == 413


def test_controllers_get_the_microversion(conf, tmp_path, monkeypatch):
    """The version a request is served at reaches the controller on the
    caller's context (``creds.api_version``), for it to branch on.
    """
    from conductor.api import controllers
    from conductor.api import versions
    tokens = tmp_path / 'tokens.json'
    tokens.write_text(json.dumps({'p1-token': {'project_id': 'p1',
                                               'roles': ['member']}}))
    conf.set('token_file', str(tokens), group='api')
    seen = []

    def domains(self, creds, req_id, host, body=None, params=None):
        seen.append((creds.api_version, creds.project_id, creds.request_id))
        return 200, {'domains': [], 'at': '%d.%d' % creds.api_version}
    monkeypatch.setattr(controllers.Hosts, 'domains', domains)
    app = api_loader.load_app()

    def call(version=None):
        headers = {'X-Auth-Token': 'p1-token'}
        if version:
            headers[versions.HEADER] = 'livesnap %s' % version
        resp = webob.Request.blank('/v1/hosts/hv1/domains',
                                   headers=headers).get_response(app)
        return resp.status_int, resp.json_body
    assert call() == (200, {'domains': [], 'at': '1.0'})
    assert call('1.1') == (200, {'domains': [], 'at': '1.1'})
    assert call('latest')[1]['at'] == '%d.%d' % versions.MAX_VERSION
    assert call('9.0')[0] == 406
    assert [s[0] for s in seen] == [(1, 0), (1, 1), versions.MAX_VERSION]
    assert seen[0][1] == 'p1' and seen[0][2].startswith('req-')
