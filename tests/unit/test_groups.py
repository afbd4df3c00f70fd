"""Snapshot groups (conductor.groups): several disks in one pause.

In process (conductor, API, agent with the QEMU driver) on offline images;
the online, one-pause case is in tests/functional/test_groups.py.
"""

import os

import pytest

from agent.driver.qemu import driver as qemu
from agent import images
from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import locking
from livesnap import tasks
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error


@pytest.fixture
def two_disks(inprocess):
    """Server 'srv2' of p1 with disks vda and vdb (16 MiB each)."""
    paths = {}
    for name in ('vda', 'vdb'):
        paths[name] = os.path.join(inprocess.image_dir,
                                   'srv2-%s.qcow2' % name)
        images.create_base(paths[name], 16 * scenarios.MiB)
    inprocess.ok('POST', '/v1/servers', {'server': {
        'id': 'srv2', 'name': 'srv2', 'project_id': 'p1',
        'host': fixtures.HOST, 'qmp_socket': None,
        'disks': [{'name': n, 'path': p} for n, p in sorted(paths.items())]}},
        token='admin-token', status=201)
    return inprocess, paths


def _disks():
    with db.transaction() as s:
        return {d.name: (d.locator['path'], d.snapshot_id, d.operation_id)
                for d in s.query(models.Disk).filter_by(server_id='srv2')}


def _create(dep, body=None):
    body = body or {'snapshot_group': {'name': 'g1'}}
    out = dep.ok('POST', '/v1/servers/srv2/snapshot-groups', body,
                 status=202)
    op = dep.wait_operation(out['operation']['id'])
    return out['snapshot_group'], op


def test_group_create_all_disks(two_disks):
    dep, paths = two_disks
    group, op = _create(dep)
    assert op['status'] == 'succeeded', op
    assert op['action'] == 'create_group'
    assert len(group['snapshots']) == 2
    shown = dep.ok('GET', '/v1/snapshot-groups/%s' % group['id'])
    snaps = shown['snapshot_group']['snapshots']
    assert sorted(s['disk'] for s in snaps) == ['vda', 'vdb']
    assert all(s['status'] == 'available' and s['current'] for s in snaps)
    disks = _disks()
    for name, (path, snap_id, lock) in disks.items():
        assert lock is None
        # the live layer keeps the disk's path, on the snapshot's own
        # file (issue 20)
        assert path == paths[name]
        with db.transaction() as s:
            snap_path = s.get(models.Snapshot, snap_id).locator['path']
        assert images.backing_file(path) == snap_path != path
        assert snap_id in [s['id'] for s in snaps]
    listed = dep.ok('GET', '/v1/servers/srv2/snapshot-groups')
    assert [g['id'] for g in listed['snapshot_groups']] == [group['id']]


def test_group_of_some_disks_and_bad_names(two_disks):
    dep, _ = two_disks
    group, op = _create(dep, {'snapshot_group': {'name': 'g',
                                                 'disks': ['vdb']}})
    assert op['status'] == 'succeeded'
    assert [s['disk'] for s in group['snapshots']] == ['vdb']
    assert _err(dep, 'POST', '/v1/servers/srv2/snapshot-groups',
                {'snapshot_group': {'name': 'g', 'disks': ['nope']}}) == \
        (404, 'not_found')
    assert _err(dep, 'POST', '/v1/servers/srv2/snapshot-groups',
                {'snapshot_group': {'name': 'g', 'disks': []}}) == \
        (400, 'bad_request')
    assert _err(dep, 'GET', '/v1/snapshot-groups/nope') == (404, 'not_found')
    # Another project sees nothing.
    assert _err(dep, 'GET', '/v1/snapshot-groups/%s' % group['id'],
                token='p2-token') == (404, 'not_found')


def test_locks_taken_in_id_order(two_disks, monkeypatch):
    dep, _ = two_disks
    order = []
    real = locking.disk_for_update

    def spy(session, disk_id):
        order.append(disk_id)
        return real(session, disk_id)

    monkeypatch.setattr(locking, 'disk_for_update', spy)
    _create(dep)
    with db.transaction() as s:
        ids = [d.id for d in s.query(models.Disk).filter_by(
            server_id='srv2')]
    # The create takes both, lowest id first (the report re-locks after).
    assert order[:2] == sorted(ids)


def test_failure_pivots_nothing(two_disks):
    dep, paths = two_disks
    before = _disks()
    # The second disk (by id) cannot take a layer: its image is gone.
    with db.transaction() as s:
        last = max(s.query(models.Disk).filter_by(server_id='srv2'),
                   key=lambda d: d.id)
        last_name = last.name
    os.unlink(paths[last_name])
    group, op = _create(dep)
    assert op['status'] == 'failed'
    assert _disks() == before  # no disk moved, every lock released
    shown = dep.ok('GET', '/v1/snapshot-groups/%s' % group['id'])
    assert {s['status'] for s in shown['snapshot_group']['snapshots']} == \
        {'error'}
    # No layer was left behind for the other disk.
    left = [f for f in os.listdir(dep.image_dir) if op['id'] in f]
    assert left == []


def test_old_agent_is_refused(two_disks, monkeypatch):
    dep, _ = two_disks
    monkeypatch.setattr(agent_versions, 'version_cap',
                        lambda host=None: '1.4')
    code, body = dep.api('POST', '/v1/servers/srv2/snapshot-groups',
                         {'snapshot_group': {'name': 'g'}}, 'p1-token')
    assert code == 409, body
    assert 'agent_too_old' in str(body) and 'RPC 1.6' in str(body)
    assert all(lock is None for _, _, lock in _disks().values())


def test_group_delete_and_revert(two_disks):
    dep, paths = two_disks
    group1, _ = _create(dep)
    group2, _ = _create(dep, {'snapshot_group': {'name': 'g2'}})
    # Revert both disks to the first group (offline server).
    out = dep.ok('POST', '/v1/snapshot-groups/%s/revert' % group1['id'],
                 status=202)
    assert len(out['operations']) == 2
    for op in out['operations']:
        assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    for name, (path, snap_id, _) in _disks().items():
        snap = [s for s in group1['snapshots'] if s['disk'] == name][0]
        assert snap_id == snap['id']
    # Delete the second group: every member by the child-count rule.
    out = dep.ok('DELETE', '/v1/snapshot-groups/%s' % group2['id'],
                 status=202)
    assert len(out['operations']) == 2
    for op in out['operations']:
        assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    shown = dep.ok('GET', '/v1/snapshot-groups/%s' % group2['id'])
    # Both members had no children left (the revert discarded the live
    # layers on them): deleted physically, rows gone.
    assert shown['snapshot_group']['snapshots'] == []


def test_group_task_schema():
    loc = {'driver': 'qemu', 'path': '/x/a.qcow2', 'qmp_socket': '/s'}
    loc2 = dict(loc, path='/x/b.qcow2')
    task = tasks.create_group_task([loc, loc2], ['a-1', 'b-1'])
    task['operation_id'] = 'op1'
    assert tasks.validate('create_snapshots', task)['disks'] == [loc, loc2]
    for bad in (dict(task, layer_names=['a-1']),
                dict(task, disk=loc2),
                dict(task, layer_names=['a-1', 'a-1'])):
        with pytest.raises(tasks.InvalidTask):
            tasks.validate('create_snapshots', bad)


def test_base_driver_refuses(tmp_path):
    from agent.driver import base
    from agent import exception

    with pytest.raises(exception.InvalidRequest):
        base.Driver.create_snapshots(qemu.QemuDriver([str(tmp_path)]),
                                     [], [], None)


def test_group_delete_refused_when_a_member_is_protected(two_disks):
    dep, _ = two_disks
    group, _ = _create(dep)
    member = group['snapshots'][1]['id']
    dep.ok('PATCH', '/v1/snapshots/%s' % member,
           {'snapshot': {'protected': True}})
    assert _err(dep, 'DELETE', '/v1/snapshot-groups/%s' % group['id']) == \
        (409, 'snapshot_protected')
    shown = dep.ok('GET', '/v1/snapshot-groups/%s' % group['id'])
    assert {s['status'] for s in shown['snapshot_group']['snapshots']} == \
        {'available'}


def test_group_quiesce(two_disks, monkeypatch):
    """``quiesce`` as for one snapshot: ``required`` needs a guest agent
    channel, the default is ``preferred`` with one; offline, every member
    is crash-consistent and says why.
    """
    dep, _ = two_disks
    code, body = dep.api('POST', '/v1/servers/srv2/snapshot-groups',
                         {'snapshot_group': {'name': 'g', 'quiesce':
                                             'required'}}, 'p1-token')
    assert code == 400 and 'guest agent' in str(body), body
    code, body = dep.api('POST', '/v1/servers/srv2/snapshot-groups',
                         {'snapshot_group': {'name': 'g', 'quiesce':
                                             'always'}}, 'p1-token')
    assert code == 400, body
    assert all(lock is None for _, _, lock in _disks().values())
    with db.transaction() as s:
        for disk in s.query(models.Disk).filter_by(server_id='srv2'):
            disk.locator = dict(disk.locator, qga_socket='/run/qga2.sock')
    group, op = _create(dep)
    assert op['status'] == 'succeeded', op
    with db.transaction() as s:
        assert s.get(models.Operation, op['id']).task['quiesce'] == \
            'preferred'
    shown = dep.ok('GET', '/v1/snapshot-groups/%s' % group['id'])
    for snap in shown['snapshot_group']['snapshots']:
        assert snap['consistency'] == 'crash'
        assert 'offline' in snap['consistency_reason']


def test_group_quiesce_behind_rpc_1_9(two_disks, monkeypatch):
    """An agent below RPC 1.9 gets no ``quiesce`` in a group task:
    ``required`` is refused, the rest is crash-consistent and says why.
    """
    dep, _ = two_disks
    with db.transaction() as s:
        for disk in s.query(models.Disk).filter_by(server_id='srv2'):
            disk.locator = dict(disk.locator, qga_socket='/run/qga2.sock')
    monkeypatch.setattr(agent_versions, 'version_cap',
                        lambda host=None: '1.8')
    code, body = dep.api('POST', '/v1/servers/srv2/snapshot-groups',
                         {'snapshot_group': {'name': 'g', 'quiesce':
                                             'required'}}, 'p1-token')
    assert code == 400 and '1.9' in str(body), body
    group, op = _create(dep, {'snapshot_group': {'name': 'g',
                                                 'quiesce': 'preferred'}})
    assert op['status'] == 'succeeded', op
    with db.transaction() as s:
        assert 'quiesce' not in s.get(models.Operation, op['id']).task
        for snap in s.query(models.Snapshot).filter_by(group_id=group['id']):
            assert snap.consistency == 'crash'
            assert '1.9' in snap.consistency_reason
            assert snap.quiesce == 'preferred'


@pytest.mark.parametrize('mode', ['required', 'preferred', 'off'])
def test_group_task_schema_takes_quiesce(mode):
    loc = {'driver': 'qemu', 'path': '/x/a.qcow2', 'qmp_socket': '/s'}
    task = tasks.create_group_task([loc], ['a-1'])
    task.update(operation_id='op1', quiesce=mode)
    assert tasks.validate('create_snapshots', task)['quiesce'] == mode
    with pytest.raises(tasks.InvalidTask):
        tasks.validate('create_snapshots', dict(task, quiesce='always'))
