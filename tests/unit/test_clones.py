"""New disks from a snapshot: POST /v1/snapshots/{id}/clone, flat and
linked, against the real QEMU driver offline (qemu-img)."""

import os
import subprocess

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from conductor import deletion
from conductor import tree
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error


@pytest.fixture
def offline(inprocess):
    base = os.path.join(inprocess.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 0 1M',
                    base], check=True, capture_output=True)
    inprocess.register_server('srv1', base)
    return inprocess, base


def _clone(dep, snap_id, mode, disk, token='p1-token', **extra):
    body = {'clone': dict(mode=mode, disk=disk, name='c', **extra)}
    return dep.ok('POST', '/v1/snapshots/%s/clone' % snap_id, body,
                  token=token, status=202)['operation']


def _disk(server_id, name):
    with db.transaction() as s:
        for d in s.get(models.Server, server_id).disks:
            if d.name == name:
                s.expunge(d)
                return d


def _compare(a, b):
    return subprocess.run(['qemu-img', 'compare', a, b],
                          capture_output=True).returncode


def test_flat_clone(offline):
    dep, base = offline
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 's1')
    assert op['status'] == 'succeeded', op
    op = _clone(dep, snap_id, 'flat', 'vdb')
    assert op['action'] == 'clone' and op['target']['disk'] == 'vdb'
    op = dep.wait_operation(op['id'])
    assert op['status'] == 'succeeded', op
    assert [s['name'] for s in op['steps']] == ['copy']
    assert op['progress'] == 100.0
    disk = _disk('srv1', 'vdb')
    assert disk.clone_of == snap_id and disk.clone_mode == 'flat'
    assert os.path.dirname(disk.active_image) == dep.image_dir
    assert images.backing_file(disk.active_image) is None
    assert _compare(base, disk.active_image) == 0
    shown = dep.ok('GET', '/v1/servers/srv1')['server']['disks']
    assert {'name': 'vdb', 'clone_of': snap_id, 'clone_mode': 'flat',
            'snapshot_id': None, 'busy': False} in shown
    # A flat clone is nobody's child: the snapshot merges as before.
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id)['operation']
    assert dep.wait_operation(op['id'])['mode'] == 'merge'
    images.check(disk.active_image)


def test_linked_clone_keeps_its_snapshot(offline):
    dep, base = offline
    dep.register_server('srv2', _base(dep, 'srv2'))
    s1, _ = scenarios.create_snapshot(dep, 'srv1', 's1')
    s2, _ = scenarios.create_snapshot(dep, 'srv1', 's2')
    op = dep.wait_operation(_clone(dep, s1, 'linked', 'vdc',
                                   server_id='srv2')['id'])
    assert op['status'] == 'succeeded', op
    assert [s['name'] for s in op['steps']] == ['prepare']
    clone = _disk('srv2', 'vdc')
    assert clone.clone_mode == 'linked'
    with db.transaction() as s:   # s1's own file (issue 20)
        s1_path = s.get(models.Snapshot, s1).locator['path']
    assert images.backing_file(clone.active_image) == s1_path
    # s1 has s2 and the clone: deleted logically, its file stays.
    op = dep.wait_operation(dep.ok('DELETE', '/v1/snapshots/%s' % s1)
                            ['operation']['id'])
    assert op['mode'] == 'logical', op
    # s2 merges into the live image; s1 is left with the live image and
    # the clone, and is never finished while the clone is there.
    op = dep.wait_operation(dep.ok('DELETE', '/v1/snapshots/%s' % s2)
                            ['operation']['id'])
    assert op['status'] == 'succeeded' and op['mode'] == 'merge', op
    with db.transaction() as s:
        snap = s.get(models.Snapshot, s1)
        assert snap.status == 'deleted'
        disk = s.get(models.Disk, snap.disk_id)
        assert tree.deferred(s, disk) == []
        # Even with the clone as its only child it is not merged.
        disk.snapshot_id = None
        mode, task, count = deletion._plan(s, snap, disk)
        assert (mode, task, count) == ('logical', None, 1)
        s.rollback()
    assert os.path.exists(s1_path)
    images.check(clone.active_image)
    assert _compare(s1_path, clone.active_image) == 0


def _base(dep, name):
    path = os.path.join(dep.image_dir, '%s-vda.qcow2' % name)
    images.create_base(path, 4 * scenarios.MiB)
    return path


def test_clone_refusals(offline, monkeypatch):
    from conductor import agent_versions
    dep, base = offline
    snap_id, _ = scenarios.create_snapshot(dep, 'srv1', 's1')
    dep.register_server('p2srv', _base(dep, 'p2srv'), project='p2')
    dep.register_server('far', _base(dep, 'far'))
    url = '/v1/snapshots/%s/clone' % snap_id
    body = {'clone': {'mode': 'flat', 'disk': 'vdb'}}
    # another project's snapshot, or another project's server
    assert _err(dep, 'POST', url, body, token='p2-token') == (
        404, 'not_found')
    for token in ('p1-token', 'admin-token'):
        assert _err(dep, 'POST', url, {'clone': {
            'mode': 'flat', 'disk': 'vdb', 'server_id': 'p2srv'}},
            token=token) == (404, 'not_found')
    # bad bodies
    for bad in ({'clone': {'mode': 'deep', 'disk': 'vdb'}},
                {'clone': {'mode': 'flat'}}, {}):
        assert _err(dep, 'POST', url, bad) == (400, 'bad_request')
    # the name of an existing disk
    assert _err(dep, 'POST', url, {'clone': {'mode': 'flat',
                                             'disk': 'vda'}}) == (
        409, 'clone_not_possible')
    # a server on another host
    with db.transaction() as s:
        s.get(models.Server, 'far').host = 'elsewhere'
    assert _err(dep, 'POST', url, {'clone': {
        'mode': 'flat', 'disk': 'vdb', 'server_id': 'far'}}) == (
        409, 'clone_not_possible')
    # an agent older than RPC 1.8
    monkeypatch.setattr(agent_versions, 'capabilities',
                        lambda host: frozenset())
    assert _err(dep, 'POST', url, body) == (409, 'clone_not_possible')
    with db.transaction() as s:
        assert not s.query(models.Operation).filter_by(
            action='clone').count()
