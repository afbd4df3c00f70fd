"""Every role against every action of the REST API, with a token file and
with Keystone (keystonemiddleware's own fixture standing in for Keystone's
token validation), on the default policy:

* ``reader`` reads its project's objects and changes nothing (403);
* ``member`` also creates, deletes and reverts snapshots in its project;
* ``admin`` does everything, in every project;
* a token of another project finds nothing (404, lists empty);
* a token with no role in the project may do nothing (403).

The policy is database-agnostic: SQLite only.
"""

import json
import os
import time

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from livesnap_tools import fixtures
from tests.functional import scenarios

#: token -> (project, roles), the same in both modes.
TOKENS = {
    'admin-token': ('admin', ['admin']),
    'p1-token': ('p1', ['member', 'reader']),
    'member-p1': ('p1', ['member']),   # "reader" implied, as Keystone does
    'reader-p1': ('p1', ['reader']),
    'norole-p1': ('p1', []),
    'member-p2': ('p2', ['member']),
}

pytestmark = pytest.mark.parametrize('database', ['sqlite'], indirect=True)


@pytest.fixture(params=['tokens', 'keystone'])
def deployment(request, conf, tmp_path, database):
    """A deployment authenticating with a token file or with Keystone."""
    dep = fixtures.InProcessDeployment(conf, tmp_path)
    ks = None
    if request.param == 'tokens':
        (tmp_path / 'tokens.json').write_text(json.dumps({
            token: {'project_id': project, 'roles': roles}
            for token, (project, roles) in TOKENS.items()}))
    else:
        ks_fixture = pytest.importorskip('keystonemiddleware.fixture')
        from keystonemiddleware import auth_token
        ks = ks_fixture.AuthTokenFixture()
        ks.setUp()
        for token, (project, roles) in TOKENS.items():
            ks.add_token_data(token_id=token, project_id=project,
                              user_id='u-' + token, role_list=roles)
        for group, opts in auth_token.list_opts():
            fixtures.CONF.register_opts(opts, group=group)
        conf.set('auth_strategy', 'keystone', group='api')
        conf.set('www_authenticate_uri', 'http://keystone.invalid/identity',
                 group='keystone_authtoken')
        os.unlink(tmp_path / 'tokens.json')
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()
        if ks is not None:
            ks.cleanUp()


def _wait_idle(dep, server_id='srv1', timeout=60):
    """Until no disk of the server is busy (the conductor may finish a
    logically deleted snapshot after a delete or a revert).
    """
    deadline = time.monotonic() + timeout
    while any(d['busy'] for d in dep.ok(
            'GET', '/v1/servers/%s' % server_id,
            token='admin-token')['server']['disks']):
        assert time.monotonic() < deadline, 'srv1 stays busy'
        time.sleep(0.05)


@pytest.fixture
def world(deployment):
    """srv1 of p1 (offline): s1 logically deleted (two children: s2 and
    the live image), s2 available; srv2 of p2.
    """
    dep = deployment
    for server, project in (('srv1', 'p1'), ('srv2', 'p2')):
        base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server)
        images.create_base(base, 4 * scenarios.MiB)
        dep.register_server(server, base, project=project)
    s1, _ = scenarios.create_snapshot(dep, 'srv1', 's1')
    s2, op = scenarios.create_snapshot(dep, 'srv1', 's2')
    assert op['status'] == 'succeeded', op
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % s1, status=202)
    assert dep.wait_operation(op['operation']['id'])['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s1, status=202)['operation']
    assert op['mode'] == 'logical', op
    _wait_idle(dep)
    return dep, {'deleted': s1, 'snap': s2, 'op': op['id']}


def _state():
    """Every row the API could change (hosts aside: heartbeats)."""
    out = {}
    with db.transaction() as s:
        for model in (models.Server, models.Disk, models.Snapshot,
                      models.Operation):
            out[model.__tablename__] = sorted(
                repr(sorted((c.name, repr(getattr(r, c.name)))
                            for c in model.__table__.columns))
                for r in s.query(model).all())
    return out


def _register_body(dep, server_id):
    return {'server': {'id': server_id, 'name': server_id,
                       'project_id': 'p1', 'host': 'hv1', 'disks': [{
                           'name': 'vda', 'path': os.path.join(
                               dep.image_dir, '%s.qcow2' % server_id)}]}}


#: rule-like name -> (method, path); ids in braces come from ``world``.
READS = {
    'server:list': ('GET', '/v1/servers'),
    'server:get': ('GET', '/v1/servers/srv1'),
    'snapshot:list': ('GET', '/v1/servers/srv1/snapshots'),
    'snapshot:list:include_deleted': (
        'GET', '/v1/servers/srv1/snapshots?include_deleted=true'),
    'snapshot:get': ('GET', '/v1/snapshots/{snap}'),
    'snapshot:get:deleted': ('GET', '/v1/snapshots/{deleted}'),
    'operation:list': ('GET', '/v1/operations'),
    'operation:get': ('GET', '/v1/operations/{op}'),
}
WRITES = {
    'snapshot:create': ('POST', '/v1/servers/srv1/snapshots'),
    'snapshot:revert': ('POST', '/v1/snapshots/{snap}/revert'),
    'snapshot:delete': ('DELETE', '/v1/snapshots/{snap}'),
}
ADMIN_ONLY = {
    'host:list': ('GET', '/v1/hosts'),
    'server:create': ('POST', '/v1/servers'),
}
#: Lists answer 200 with nothing to a foreign project (no object named).
LISTS = ('server:list', 'operation:list')


def _body(dep, name):
    if name == 'snapshot:create':
        return {'snapshot': {'name': 'x', 'disk': 'vda'}}
    if name == 'server:create':
        return _register_body(dep, 'srv9')
    return None


def _call(dep, ids, name, method, path, token):
    return dep.api(method, path.format(**ids), _body(dep, name), token)


def _refused(dep, ids, token, actions, status, code):
    """Each action answers ``status``/``code`` and changes nothing."""
    before = _state()
    for name, (method, path) in actions.items():
        got, body = _call(dep, ids, name, method, path, token)
        assert (got, body.get('error', {}).get('code')) == (
            status, code), (token, name, body)
        assert set(body) == {'error'}
    assert _state() == before
    return body


def test_reader_reads_and_changes_nothing(world):
    dep, ids = world
    for name, (method, path) in READS.items():
        status, body = _call(dep, ids, name, method, path, 'reader-p1')
        assert status == 200, (name, body)
    servers = dep.ok('GET', '/v1/servers', token='reader-p1')['servers']
    assert [s['id'] for s in servers] == ['srv1']
    assert dep.ok('GET', '/v1/snapshots/%s' % ids['deleted'],
                  token='reader-p1')['snapshot']['status'] == 'deleted'
    _refused(dep, ids, 'reader-p1', WRITES, 403, 'forbidden')
    _refused(dep, ids, 'reader-p1', ADMIN_ONLY, 403, 'forbidden')


def test_a_readers_write_is_refused_with_a_clear_message(world):
    dep, ids = world
    status, body = dep.api('POST', '/v1/servers/srv1/snapshots',
                           {'snapshot': {'name': 'x', 'disk': 'vda'}},
                           token='reader-p1')
    assert status == 403
    message = body['error']['message']
    for words in ('role reader', 'project p1', 'may not create snapshots',
                  'livesnap:snapshot:create'):
        assert words in message, message
    status, body = dep.api('DELETE', '/v1/snapshots/%s' % ids['snap'],
                           token='reader-p1')
    assert status == 403
    assert 'may not delete snapshots' in body['error']['message']


def test_a_token_without_a_role_may_do_nothing(world):
    dep, ids = world
    body = _refused(dep, ids, 'norole-p1', dict(READS, **WRITES), 403,
                    'forbidden')
    assert 'no role' in body['error']['message']
    _refused(dep, ids, 'norole-p1', ADMIN_ONLY, 403, 'forbidden')


def test_another_project_finds_nothing(world):
    dep, ids = world
    foreign = {k: v for k, v in dict(READS, **WRITES).items()
               if k not in LISTS}
    _refused(dep, ids, 'member-p2', foreign, 404, 'not_found')
    _refused(dep, ids, 'member-p2', ADMIN_ONLY, 403, 'forbidden')
    assert [s['id'] for s in dep.ok('GET', '/v1/servers',
                                    token='member-p2')['servers']] == ['srv2']
    assert dep.ok('GET', '/v1/operations', token='member-p2') == {
        'operations': []}


@pytest.mark.parametrize('token', ['member-p1', 'admin-token'])
def test_member_and_admin_create_revert_and_delete(world, token):
    dep, ids = world
    for name, (method, path) in READS.items():
        status, body = _call(dep, ids, name, method, path, token)
        assert status == 200, (name, body)
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'new', token=token)
    assert op['status'] == 'succeeded', op
    _wait_idle(dep)
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % ids['snap'],
                token=token, status=202)['operation']
    assert dep.wait_operation(op['id'], token=token)['status'] == \
        'succeeded'
    _wait_idle(dep)
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id, token=token,
                status=202)['operation']
    assert dep.wait_operation(op['id'], token=token)['status'] == \
        'succeeded'
    _wait_idle(dep)
    if token == 'member-p1':
        _refused(dep, ids, token, ADMIN_ONLY, 403, 'forbidden')
    else:
        assert dep.ok('GET', '/v1/hosts', token=token)['hosts'][0][
            'name'] == 'hv1'
        dep.ok('POST', '/v1/servers', _register_body(dep, 'srv9'),
               token=token, status=201)
        assert {s['id'] for s in dep.ok('GET', '/v1/servers', token=token)[
            'servers']} == {'srv1', 'srv2', 'srv9'}
        # Every project's objects, another project's included.
        snap2, op = scenarios.create_snapshot(dep, 'srv2', 'of-p2',
                                              token=token)
        assert op['status'] == 'succeeded'
        assert dep.ok('GET', '/v1/snapshots/%s' % snap2,
                      token='member-p2')['snapshot']['name'] == 'of-p2'


def test_a_logically_deleted_snapshot_is_shown_to_its_owner(
        world, conf, tmp_path):
    """Listed with include_deleted=true, shown by GET (status "deleted"),
    409 to a delete or revert (the conductor finishes it itself).
    """
    from conductor import rbac
    dep, ids = world
    path = '/v1/snapshots/%s' % ids['deleted']
    listed = {s['id']: s for s in dep.ok(
        'GET', '/v1/servers/srv1/snapshots?include_deleted=true')[
            'snapshots']}
    shown = dep.ok('GET', path)['snapshot']
    assert shown == listed[ids['deleted']] and shown['status'] == 'deleted'
    assert ids['deleted'] not in {s['id'] for s in dep.ok(
        'GET', '/v1/servers/srv1/snapshots')['snapshots']}
    before = _state()
    for method, action in (('DELETE', path), ('POST', path + '/revert')):
        assert fixtures.api_error(dep, method, action) == (
            409, 'invalid_state')
        assert fixtures.api_error(dep, method, action,
                                  token='reader-p1') == (403, 'forbidden')
        assert fixtures.api_error(dep, method, action,
                                  token='member-p2') == (404, 'not_found')
    assert fixtures.api_error(dep, 'GET', path, token='member-p2') == (
        404, 'not_found')
    assert _state() == before
    # A cloud that hides deleted snapshots from their owners hides them
    # everywhere.
    policy_file = tmp_path / 'policy.yaml'
    policy_file.write_text(
        '"livesnap:snapshot:list:include_deleted": "rule:admin_api"\n')
    conf.set('policy_file', str(policy_file), group='oslo_policy')
    rbac.reset()
    try:
        for method, action in (('GET', path), ('DELETE', path),
                               ('POST', path + '/revert')):
            assert fixtures.api_error(dep, method, action) == (
                404, 'not_found'), (method, action)
        assert dep.ok('GET', path, token='admin-token')['snapshot'][
            'status'] == 'deleted'
    finally:
        rbac.reset()
