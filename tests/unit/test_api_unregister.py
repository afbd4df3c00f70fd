"""Unregistering a server: ``DELETE /v1/servers/{id}`` (issue 20, item 2).
Runs conductor and agent in-process (real qemu-img on offline disks).
"""

import os

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from conductor import locking
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error
ADMIN = 'admin-token'


@pytest.fixture
def offline(inprocess):
    """An offline server 'srv1' of project p1 with a 16 MiB disk."""
    base = os.path.join(inprocess.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 16 * scenarios.MiB)
    inprocess.register_server('srv1', base)
    return inprocess, base


def _layers(dep):
    return sorted(os.path.join(dep.image_dir, x)
                  for x in os.listdir(dep.image_dir)
                  if x.endswith('.qcow2'))


def test_only_admin_unregisters(offline):
    dep, _ = offline
    assert _err(dep, 'DELETE', '/v1/servers/srv1') == (403, 'forbidden')
    assert _err(dep, 'DELETE', '/v1/servers/srv1',
                token='p2-token') == (404, 'not_found')
    assert _err(dep, 'DELETE', '/v1/servers/nope',
                token=ADMIN) == (404, 'not_found')
    assert _err(dep, 'DELETE', '/v1/servers/srv1?keep=1',
                token=ADMIN) == (400, 'bad_request')
    assert dep.ok('GET', '/v1/servers/srv1')['server']['status'] == 'active'


def test_unregister_without_snapshots(offline):
    dep, base = offline
    status, body = dep.api('DELETE', '/v1/servers/srv1', token=ADMIN)
    assert status == 200, body
    assert body['server'] == {'id': 'srv1', 'status': 'deleted',
                              'files_left': []}
    assert _err(dep, 'GET', '/v1/servers/srv1') == (404, 'not_found')
    assert os.path.exists(base)


def test_unregister_deletes_snapshots_first(offline):
    dep, base = offline
    scenarios.create_snapshot(dep, 'srv1', 'a')
    scenarios.create_snapshot(dep, 'srv1', 'b')
    scenarios.create_snapshot(dep, 'srv1', 'c')
    assert len(_layers(dep)) == 4
    status, body = dep.api('DELETE', '/v1/servers/srv1', token=ADMIN)
    assert status == 202, body
    assert body['server'] == {'id': 'srv1', 'status': 'deleting'}
    assert body['operation']['action'] == 'server.delete'
    op = dep.wait_operation(body['operation']['id'], token=ADMIN)
    assert op['status'] == 'succeeded', op
    assert op['progress'] == 100.0
    assert [s['name'] for s in op['steps']] == [
        'mark-snapshots-deleted', 'delete-snapshots', 'remove-records']
    assert _err(dep, 'GET', '/v1/servers/srv1') == (404, 'not_found')
    # Every snapshot was deleted by the child-count flow, by the conductor.
    deletes = [x for x in dep.ok('GET', '/v1/operations',
                                 token=ADMIN)['operations']
               if x['action'] == 'delete']
    assert len(deletes) == 3
    assert all(x['status'] == 'succeeded' and x['mode'] == 'merge'
               for x in deletes), deletes
    # One layer is left: the live one, complete and self-contained.
    left = _layers(dep)
    assert len(left) == 1, left
    assert images.backing_file(left[0]) is None
    images.check(left[0])
    with db.transaction() as s:
        assert db.snapshots_of_server(s, 'srv1', True) == []


def test_keep_snapshots_lists_the_files(offline):
    dep, base = offline
    scenarios.create_snapshot(dep, 'srv1', 'a')
    scenarios.create_snapshot(dep, 'srv1', 'b')
    before = _layers(dep)
    status, body = dep.api('DELETE', '/v1/servers/srv1?keep_snapshots=true',
                           token=ADMIN)
    assert status == 200, body
    files = body['server']['files_left']
    assert len(files) == 2
    assert all(os.path.exists(f['path']) for f in files)
    assert _layers(dep) == before
    assert _err(dep, 'GET', '/v1/servers/srv1') == (404, 'not_found')
    # The disk path is free to register again.
    dep.register_server('srv1', base)


def test_protected_snapshot_is_409(offline):
    dep, _ = offline
    snap, _ = scenarios.create_snapshot(dep, 'srv1', 'a')
    dep.ok('PATCH', '/v1/snapshots/%s' % snap,
           {'snapshot': {'protected': True}})
    assert _err(dep, 'DELETE', '/v1/servers/srv1', token=ADMIN) == (
        409, 'conflict')
    assert dep.ok('GET', '/v1/snapshots/%s' % snap)['snapshot'][
        'status'] == 'available'
    status, body = dep.api('DELETE', '/v1/servers/srv1?keep_snapshots=1',
                           token=ADMIN)
    assert status == 200, body


def test_busy_disk_is_409(offline):
    dep, _ = offline
    with db.transaction() as s:
        server = db.server_get(s, 'srv1')
        assert locking.lock_disk(s, server.disks[0].id, 'some-operation')
    assert _err(dep, 'DELETE', '/v1/servers/srv1', token=ADMIN) == (
        409, 'conflict')
    assert _err(dep, 'DELETE', '/v1/servers/srv1?keep_snapshots=true',
                token=ADMIN) == (409, 'conflict')
    dep.ok('GET', '/v1/servers/srv1')


def test_host_down_is_503_unless_forced(offline):
    dep, base = offline
    dep.ok('POST', '/v1/servers', {'server': {
        'id': 'ghost1', 'name': 'g', 'project_id': 'p1', 'host': 'ghost',
        'disks': [{'name': 'vda', 'path': base}]}}, token=ADMIN)
    with db.transaction() as s:
        disk = db.server_get(s, 'ghost1').disks[0]
        s.add(models.Snapshot(
            id='0ab1c2d3-0000-4000-8000-000000000001', disk_id=disk.id,
            project_id='p1', name='x', status='available',
            image='/nowhere/x.qcow2'))
    assert _err(dep, 'DELETE', '/v1/servers/ghost1', token=ADMIN) == (
        503, 'host_down')
    status, body = dep.api('DELETE', '/v1/servers/ghost1?force=true',
                           token=ADMIN)
    assert status == 200, body
    assert [f['path'] for f in body['server']['files_left']] == [
        '/nowhere/x.qcow2']
    assert _err(dep, 'GET', '/v1/servers/ghost1') == (404, 'not_found')


def test_no_new_work_while_deleting(offline):
    """While a server.delete runs, the server shows ``deleting``, a create
    on it is refused, and a second DELETE answers the same operation.
    """
    dep, _ = offline
    with db.transaction() as s:
        server = db.server_get(s, 'srv1')
        s.add(models.Operation(
            id='0ab1c2d3-0000-4000-8000-0000000000aa', project_id='p1',
            server_id='srv1', disk_id=server.disks[0].id, host='hv1',
            action='server.delete', status='running', steps=[],
            requested_by='tenant', attempts=0))
    assert dep.ok('GET', '/v1/servers/srv1')['server']['status'] == \
        'deleting'
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vda'}}) == (
        409, 'conflict')
    status, body = dep.api('DELETE', '/v1/servers/srv1', token=ADMIN)
    assert status == 202, body
    assert body['operation']['id'] == '0ab1c2d3-0000-4000-8000-0000000000aa'
