"""What each caller sees of an object: host details (QMP socket, image
paths, host names, steps' details, paths in errors) only with the policy's
``livesnap:host_details`` (admins by default); both shapes fit the OpenAPI
document."""

import json
import os
import types

import jsonschema
import pytest

from agent import images
from conductor.api import openapi
from conductor.api import views
from conductor import rbac
from livesnap_tools import fixtures
from tests.functional import scenarios

#: The views do not depend on the database: SQLite only.
SQLITE = pytest.mark.parametrize('database', ['sqlite'], indirect=True)

SOCKET = '/run/livesnap-test/srv1.qmp'   # no QEMU: the disk is offline
TENANT_SERVER = {'id', 'name', 'project_id', 'status', 'created_at', 'disks'}
TENANT_DISK = {'name', 'snapshot_id', 'busy'}
TENANT_STEP = {'name', 'status', 'started_at', 'duration_ms', 'error'}


def _conforms(instance, name):
    """``instance`` fits ``components/schemas/NAME`` of the document."""
    doc = openapi.document()
    jsonschema.Draft202012Validator(
        dict(doc, **{'$ref': '#/components/schemas/%s' % name})).validate(
            instance)


@pytest.fixture
def world(inprocess):
    dep = inprocess
    base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    dep.register_server('srv1', base, qmp_socket=SOCKET)
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 's1')
    assert op['status'] == 'succeeded', op
    return dep, snap_id, op['id']


@SQLITE
def test_tenants_see_no_host_details(world):
    dep, snap_id, op_id = world
    server = dep.ok('GET', '/v1/servers/srv1')['server']
    assert set(server) == TENANT_SERVER
    assert set(server['disks'][0]) == TENANT_DISK
    assert dep.ok('GET', '/v1/servers')['servers'] == [server]
    op = dep.ok('GET', '/v1/operations/%s' % op_id)['operation']
    assert 'host' not in op
    assert [s['name'] for s in op['steps']] == ['prepare', 'snapshot']
    assert all(set(s) <= TENANT_STEP and s['duration_ms'] is not None
               for s in op['steps'])
    assert dep.ok('GET', '/v1/operations')['operations'] == [op]
    snap = dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot']
    assert snap['size_bytes'] > 0 and snap['status'] == 'available'
    text = json.dumps([server, op, snap, dep.ok(
        'GET', '/v1/servers/srv1/snapshots')])
    for secret in (dep.image_dir, SOCKET, 'qcow2', 'hv1'):
        assert secret not in text
    _conforms(server, 'Server')
    _conforms(op, 'Operation')
    _conforms(snap, 'Snapshot')


@SQLITE
def test_admins_see_host_details(world):
    dep, _, op_id = world
    server = dep.ok('GET', '/v1/servers/srv1', token='admin-token')['server']
    assert (server['host'], server['qmp_socket']) == ('hv1', SOCKET)
    assert os.path.dirname(server['disks'][0]['active_image']) == \
        dep.image_dir
    op = dep.ok('GET', '/v1/operations/%s' % op_id,
                token='admin-token')['operation']
    assert op['host'] == 'hv1'
    # the create's new file is the snapshot's; the live layer keeps the
    # disk's path (issue 20)
    assert op['steps'][0]['detail']['image'] == \
        images.backing_file(server['disks'][0]['active_image'])
    _conforms(server, 'Server')
    _conforms(op, 'Operation')


@SQLITE
def test_the_snapshot_create_answer_has_the_callers_shape(world):
    dep, _, _ = world
    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 's2', 'disk': 'vda'}}, status=202)
    assert 'host' not in body['operation']
    dep.wait_operation(body['operation']['id'])
    body = dep.ok('DELETE', '/v1/snapshots/%s' % body['snapshot']['id'],
                  status=202)
    assert 'host' not in body['operation']
    dep.wait_operation(body['operation']['id'])


@SQLITE
def test_a_host_down_is_not_named_to_tenants(world):
    dep, _, _ = world
    base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
    dep.ok('POST', '/v1/servers', {'server': {
        'id': 'ghost1', 'name': 'g', 'project_id': 'p1', 'host': 'ghost',
        'disks': [{'name': 'vda', 'path': base}]}}, token='admin-token')
    body = {'snapshot': {'name': 'x', 'disk': 'vda'}}
    status, tenant = dep.api('POST', '/v1/servers/ghost1/snapshots', body)
    assert (status, tenant['error']['code']) == (503, 'host_down')
    assert 'ghost' not in tenant['error']['message']
    status, admin = dep.api('POST', '/v1/servers/ghost1/snapshots', body,
                            token='admin-token')
    assert status == 503 and 'ghost' in admin['error']['message']


@SQLITE
def test_the_policy_may_give_members_host_details(world, conf, tmp_path):
    dep, _, _ = world
    path = tmp_path / 'policy.yaml'
    path.write_text('"livesnap:host_details": '
                    '"rule:project_member_or_admin"\n')
    conf.set('policy_file', str(path), group='oslo_policy')
    rbac.reset()
    try:
        server = dep.ok('GET', '/v1/servers/srv1')['server']
        assert server['qmp_socket'] == SOCKET
        assert 'active_image' in server['disks'][0]
    finally:
        rbac.reset()


# ------------------------------------------------------------ the views

def _op(**kw):
    fields = dict(id='op1', action='delete', status='failed', mode='merge',
                  server_id='srv1', snapshot_id='s1', host='hv7',
                  pause_ms=1.5, progress=None, requested_by='tenant',
                  created_at=None, updated_at=None, steps=[], error=None)
    fields.update(kw)
    return types.SimpleNamespace(**fields)


def test_errors_and_steps_lose_paths_and_host_names():
    error = ("/usr/bin/qemu-img info --output=json /srv/img/d-1.qcow2 "
             "failed (exit 1): qemu-img: Could not open '/srv/my img/a': "
             "Failed to get shared \"write\" lock\nIs another process "
             "using the image [/srv/my img/a]? (agent of host hv7)")
    steps = [{'name': 'prepare', 'status': 'done', 'started_at': 1.0,
              'duration_ms': 2.0, 'detail': {'image': '/srv/img/d-1.qcow2',
                                             'job': 'stream-op1'}},
             {'name': 'merge', 'status': 'failed', 'started_at': 2.0,
              'duration_ms': 3.0, 'error': 'Cannot remove /srv/img/x.',
              'detail': {'image': '/srv/img/x'}}]
    op = _op(error=error, steps=steps)
    tenant = views.operation(op, 'vda')
    assert tenant['error'] == (
        "<path> info --output=json <path> failed (exit 1): qemu-img: Could "
        "not open '<path>': Failed to get shared \"write\" lock\nIs another "
        "process using the image [<path>]? (agent of host <host>)")
    # Step times are ISO 8601 like every other time (the agent records
    # UNIX times); durations stay numbers.
    assert tenant['steps'] == [
        {'name': 'prepare', 'status': 'done',
         'started_at': '1970-01-01T00:00:01Z', 'duration_ms': 2.0},
        {'name': 'merge', 'status': 'failed',
         'started_at': '1970-01-01T00:00:02Z', 'duration_ms': 3.0,
         'error': 'Cannot remove <path>.'}]
    assert 'host' not in tenant and tenant['pause_ms'] == 1.5
    admin = views.operation(op, 'vda', details=True)
    assert admin['error'] == error
    assert admin['steps'] == [
        dict(steps[0], started_at='1970-01-01T00:00:01Z'),
        dict(steps[1], started_at='1970-01-01T00:00:02Z')]
    assert admin['host'] == 'hv7'
    _conforms(tenant, 'Operation')
    _conforms(admin, 'Operation')


@pytest.mark.parametrize('text, expected', [
    ('Guest I/O and/or 50/50', 'Guest I/O and/or 50/50'),
    ('see http://keystone.example/identity', 'see '
     'http://keystone.example/identity'),
    ('path=/run/a.sock, node disk0', 'path=<path>, node disk0'),
    ('(/tmp/x) on hv7. hv7.example and hv70 stay',
     '(<path>) on <host>. hv7.example and hv70 stay'),
    ('', ''),
    (None, None),
])
def test_redact(text, expected):
    assert views.redact(text, 'hv7') == expected


@SQLITE
def test_keystone_refuses_to_start_without_www_authenticate_uri(
        conf, tmp_path, database):
    """Not a 500 on the first request: no start at all, and why."""
    from conductor.api import auth
    from conductor.api import loader
    from conductor import service
    from livesnap import service as common_service
    conf.set('auth_strategy', 'keystone', group='api')
    fixtures.InProcessDeployment(conf, tmp_path)
    svc = service.ConductorService()
    with pytest.raises(common_service.ConfigurationError) as err:
        svc.start()
    assert 'www_authenticate_uri' in str(err.value)
    assert svc.rpc_server is None and svc.api_server is None
    with pytest.raises(common_service.ConfigurationError):
        loader.load_app()
    conf.set('www_authenticate_uri', 'http://keystone.invalid/identity',
             group='keystone_authtoken')
    auth.check_config()


def test_the_conductor_exits_with_the_reason(tmp_path):
    """``livesnap-conductor`` itself: exit status 2, the reason logged."""
    import subprocess
    import sys
    config = tmp_path / 'livesnap.conf'
    config.write_text(
        '[DEFAULT]\nstate_path = %s\n[database]\n'
        'connection = sqlite:///%s\n[api]\nauth_strategy = keystone\n'
        'port = 0\n[keystone_authtoken]\n' % (tmp_path, tmp_path / 'db'))
    proc = subprocess.run(
        [sys.executable, '-m', 'conductor.service', '--config-file',
         str(config)], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    assert 'livesnap-conductor cannot start' in proc.stderr
    assert 'www_authenticate_uri' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'db').exists()  # nothing started


@SQLITE
def test_an_unreachable_database_answers_503_and_changes_nothing(
        world, conf):
    from conductor.db import api as db
    dep = world[0]
    conf.set('connection', 'postgresql+psycopg2://postgres@127.0.0.1:9/none',
             group='database')
    db.reset()
    for method, path, body in (
            ('GET', '/v1/servers', None),
            ('POST', '/v1/servers/srv1/snapshots',
             {'snapshot': {'name': 'x', 'disk': 'vda'}})):
        status, code = fixtures.api_error(dep, method, path, body)
        assert (status, code) == (503, 'database_unavailable'), (method, path)
