"""REST API behaviour: JSON errors, isolation between projects, the disk
lock, host liveness.  Runs conductor and agent in-process (real qemu-img
on offline disks) on SQLite and on PostgreSQL."""

import os
import uuid

import pytest

from agent import images
from conductor.db import api as db
from conductor import locking
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error


@pytest.fixture
def offline(inprocess):
    """An offline server 'srv1' of project p1 with a 16 MiB disk."""
    base = os.path.join(inprocess.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 16 * scenarios.MiB)
    inprocess.register_server('srv1', base)
    return inprocess, base


def test_offline_create(offline):
    dep, base = offline
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'cold')
    assert op['status'] == 'succeeded', op
    assert op['mode'] == 'offline'
    assert [s['name'] for s in op['steps']] == ['prepare', 'snapshot']
    assert op['pause_ms'] is None
    # Image paths are host details: the admin sees them.
    disk = dep.ok('GET', '/v1/servers/srv1',
                  token='admin-token')['server']['disks'][0]
    # The registered path keeps the live layer (issue 20).
    assert disk['active_image'] == base
    snap_image = images.backing_file(base)
    assert snap_image != base and \
        os.path.dirname(snap_image) == os.path.dirname(base)
    images.check(disk['active_image'])
    images.check(snap_image)


def test_malformed_json(offline):
    dep, _ = offline
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                raw=b'{"snapshot": ') == (400, 'bad_request')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                raw=b'\xff\xfe') == (400, 'bad_request')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                raw=b'') == (400, 'bad_request')


@pytest.mark.parametrize('body', [
    {}, {'snapshot': {}}, {'snapshot': {'name': 'x'}},
    {'snapshot': {'disk': 'vda'}}, {'snapshot': {'name': '', 'disk': 'vda'}},
    {'snapshot': {'name': 'x', 'disk': 'vda', 'extra': 1}},
    {'snapshot': {'name': 7, 'disk': 'vda'}}, [], 'x',
    {'snapshot': {'name': 'x' * 256, 'disk': 'vda'}},
])
def test_invalid_snapshot_body(offline, body):
    dep, _ = offline
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                body) == (400, 'bad_request')


def test_authentication_required(offline):
    dep, _ = offline
    assert _err(dep, 'GET', '/v1/servers', token=None) == (
        401, 'unauthorized')
    assert _err(dep, 'GET', '/v1/servers', token='nope') == (
        401, 'unauthorized')


def test_unknown_objects(offline):
    dep, _ = offline
    body = {'snapshot': {'name': 'x', 'disk': 'vda'}}
    assert _err(dep, 'POST', '/v1/servers/nope/snapshots', body) == (
        404, 'not_found')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vdz'}}) == (
        404, 'not_found')
    assert _err(dep, 'GET', '/v1/snapshots/%s' % uuid.uuid4()) == (
        404, 'not_found')
    assert _err(dep, 'GET', '/v1/operations/%s' % uuid.uuid4()) == (
        404, 'not_found')
    assert _err(dep, 'GET', '/v1/nothing') == (404, 'not_found')
    assert _err(dep, 'PUT', '/v1/servers') == (405, 'method_not_allowed')


def test_other_project_sees_nothing(offline):
    dep, _ = offline
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'mine')
    assert dep.ok('GET', '/v1/servers', token='p2-token') == {'servers': []}
    for path in ('/v1/servers/srv1', '/v1/servers/srv1/snapshots',
                 '/v1/snapshots/%s' % snap_id,
                 '/v1/operations/%s' % op['id']):
        assert _err(dep, 'GET', path, token='p2-token') == (404, 'not_found')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vda'}},
                token='p2-token') == (404, 'not_found')
    assert dep.ok('GET', '/v1/operations', token='p2-token') == {
        'operations': []}
    # The admin sees everything; the owner sees its own.
    assert [s['id'] for s in dep.ok('GET', '/v1/servers',
                                    token='admin-token')['servers']] == [
        'srv1']
    assert len(dep.ok('GET', '/v1/operations')['operations']) == 1


def test_only_admin_registers(offline):
    dep, base = offline
    body = {'server': {'id': 'srv2', 'name': 'x', 'project_id': 'p1',
                       'host': 'hv1', 'disks': [{'name': 'vda',
                                                 'path': base}]}}
    assert _err(dep, 'POST', '/v1/servers', body) == (403, 'forbidden')
    assert _err(dep, 'POST', '/v1/servers',
                dict(body, server=dict(body['server'], id='srv1')),
                token='admin-token') == (409, 'conflict')


def test_register_refuses_path_outside_image_dirs(offline):
    dep, _ = offline
    body = {'server': {'id': 'srv3', 'name': 'x', 'project_id': 'p1',
                       'host': 'hv1',
                       'disks': [{'name': 'vda', 'path': '/etc/passwd'}]}}
    assert _err(dep, 'POST', '/v1/servers', body,
                token='admin-token') == (400, 'bad_request')


def test_host_down_is_503(offline):
    dep, base = offline
    dep.ok('POST', '/v1/servers', {'server': {
        'id': 'ghost1', 'name': 'g', 'project_id': 'p1', 'host': 'ghost',
        'disks': [{'name': 'vda', 'path': base}]}}, token='admin-token')
    assert _err(dep, 'POST', '/v1/servers/ghost1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vda'}}) == (
        503, 'host_down')


def test_busy_disk_is_409(offline):
    dep, _ = offline
    with db.transaction() as s:
        server = db.server_get(s, 'srv1')
        assert locking.lock_disk(s, server.disks[0].id, 'some-operation')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vda'}}) == (
        409, 'disk_busy')
    # Nothing was recorded for the refused request.
    assert dep.ok('GET', '/v1/servers/srv1/snapshots') == {'snapshots': []}


def test_agent_refuses_path_outside_image_dirs(offline, tmp_path):
    """A disk registered before the host reported its image dirs can still
    point outside them; the agent refuses and nothing is touched.
    """
    dep, _ = offline
    outside = tmp_path / 'elsewhere'
    outside.mkdir()
    image = str(outside / 'x.qcow2')
    images.create_base(image, 1024 * 1024)
    with db.transaction() as s:
        disk = db.server_get(s, 'srv1').disks[0]
        disk.locator = dict(disk.locator, path=image)
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'escape')
    assert op['status'] == 'failed'
    assert 'outside' in op['error']
    # The path is a host detail: the tenant sees <path>, the admin the path.
    assert image not in op['error'] and '<path>' in op['error']
    assert image in dep.ok('GET', '/v1/operations/%s' % op['id'],
                           token='admin-token')['operation']['error']
    assert sorted(os.listdir(outside)) == ['x.qcow2']
    snap = dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot']
    assert snap['status'] == 'error'
    assert dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
        'busy'] is False


def test_request_too_large(offline):
    dep, _ = offline
    status, code = _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                        raw=b'{"a": "' + b'x' * 70000 + b'"}')
    assert (status, code) == (413, 'request_too_large')


def test_hosts_show_liveness(offline):
    dep, _ = offline
    hosts = dep.ok('GET', '/v1/hosts', token='admin-token')['hosts']
    assert [(h['name'], h['state']) for h in hosts] == [('hv1', 'up')]
    assert hosts[0]['image_dirs'] == [dep.image_dir]
    # The agent API version its heartbeats report (host list's column).
    from agent import rpcapi as agent_rpcapi
    assert hosts[0]['rpc_version'] == agent_rpcapi.RPC_API_VERSION
    assert _err(dep, 'GET', '/v1/hosts') == (403, 'forbidden')
    dep.agent.stop()
    dep.agent = None
    from conductor.db import models
    with db.transaction() as s:
        s.get(models.Host, 'hv1').last_heartbeat = models.utcnow().replace(
            year=2000)
    hosts = dep.ok('GET', '/v1/hosts', token='admin-token')['hosts']
    assert hosts[0]['state'] == 'down'


def test_chain_depth_limit(offline, conf):
    dep, _ = offline
    conf.set('max_chain_depth', 2, group='conductor')
    for name in ('a', 'b'):
        _, op = scenarios.create_snapshot(dep, 'srv1', name)
        assert op['status'] == 'succeeded'
    status, body = dep.api('POST', '/v1/servers/srv1/snapshots',
                           {'snapshot': {'name': 'c', 'disk': 'vda'}})
    assert status == 409 and body['error']['code'] == 'chain_too_deep'
    assert 'limit is 2' in body['error']['message']
    assert len(dep.ok('GET', '/v1/servers/srv1/snapshots')[
        'snapshots']) == 2


def test_snapshot_quota(offline, conf):
    dep, _ = offline
    conf.set('snapshot_quota', 1, group='conductor')
    _, op = scenarios.create_snapshot(dep, 'srv1', 'a')
    assert op['status'] == 'succeeded'
    status, body = dep.api('POST', '/v1/servers/srv1/snapshots',
                           {'snapshot': {'name': 'b', 'disk': 'vda'}})
    assert status == 403 and body['error']['code'] == 'quota_exceeded'
    # The refused request left the disk free and recorded nothing.
    assert dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
        'busy'] is False
    assert len(dep.ok('GET', '/v1/servers/srv1/snapshots')[
        'snapshots']) == 1


def test_concurrent_deletes_decide_once(offline):
    """Two deletes of one snapshot at once: the disk lock lets one act."""
    import threading
    dep, _ = offline
    snap, _ = scenarios.create_snapshot(dep, 'srv1', 'a')
    results = []
    barrier = threading.Barrier(2)

    def delete():
        barrier.wait()
        results.append(dep.api('DELETE', '/v1/snapshots/%s' % snap)[0])

    threads = [threading.Thread(target=delete) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) in ([202, 409], [202, 404])


def test_merge_ends_at_full_progress(offline):
    """A copy too short to report progress still ends at 100; an
    operation that copies nothing has none.
    """
    dep, _ = offline
    old, op = scenarios.create_snapshot(dep, 'srv1', 'old')
    assert op['progress'] is None
    scenarios.create_snapshot(dep, 'srv1', 'new')
    op_id = dep.ok('DELETE', '/v1/snapshots/%s' % old)['operation']['id']
    op = dep.wait_operation(op_id)
    assert op['status'] == 'succeeded' and op['mode'] == 'merge', op
    assert op['progress'] == 100.0
