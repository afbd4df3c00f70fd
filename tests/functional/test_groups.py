"""Snapshot groups end to end with a real QEMU with two disks.

Conductor, API and agent in one process (kombu+memory); the VM is a
``-M none`` QEMU with two qcow2 nodes.  One request snapshots both disks
in one pause (one ``stop``, one QMP ``transaction``, one ``cont``); then
the group is reverted (VM shut off) and deleted.
"""

import os

import pytest

from agent.driver.qemu import qmp
from agent import images
from livesnap_tools import fixtures
from livesnap_tools import testvm
from tests.functional import scenarios

pytestmark = pytest.mark.functional

MiB = scenarios.MiB


class TwoDiskVM(testvm.TestVM):
    """A test VM with a second qcow2 node, ``disk1``."""

    __test__ = False

    def __init__(self, image, image2, qmp_socket, **kwargs):
        super().__init__(image, qmp_socket, **kwargs)
        self.image2 = os.path.abspath(image2)

    def command(self):
        return super().command() + [
            "-blockdev",
            "driver=qcow2,node-name=disk1,file.driver=file,"
            "file.filename=%s" % self.image2.replace(",", ",,")]

    def node_of(self, path):
        return [n["node-name"] for n in self.nodes()
                if os.path.realpath(n["file"]) == os.path.realpath(path)][0]


def _actives(dep):
    disks = dep.ok('GET', '/v1/servers/srv2',
                   token='admin-token')['server']['disks']
    return {d['name']: d['active_image'] for d in disks}


def _write(vm, path, pattern, offset):
    node = vm.node_of(path)
    vm.write(pattern, offset, MiB, node=node)
    vm.flush(node)


def test_group_online_revert_delete(inprocess, tmp_path, monkeypatch):
    dep = inprocess
    paths = {n: os.path.join(dep.image_dir, 'srv2-%s.qcow2' % n)
             for n in ('vda', 'vdb')}
    for path in paths.values():
        images.create_base(path, 16 * MiB)
    sock = '/tmp/ls-grp-%d.sock' % os.getpid()
    vm = TwoDiskVM(paths['vda'], paths['vdb'], sock, name='grp').start()
    batches = []
    real_send = qmp.QMPSession.send

    def send(self, commands):
        batches.append([c for c, _ in commands])
        return real_send(self, commands)

    monkeypatch.setattr(qmp.QMPSession, 'send', send)
    try:
        dep.ok('POST', '/v1/servers', {'server': {
            'id': 'srv2', 'name': 'srv2', 'project_id': 'p1',
            'host': fixtures.HOST, 'qmp_socket': sock,
            'disks': [{'name': n, 'path': p}
                      for n, p in sorted(paths.items())]}},
            token='admin-token', status=201)
        _write(vm, paths['vda'], 0xa1, 0)
        _write(vm, paths['vdb'], 0xb1, 0)

        out = dep.ok('POST', '/v1/servers/srv2/snapshot-groups',
                     {'snapshot_group': {'name': 'both'}}, status=202)
        op = dep.wait_operation(out['operation']['id'])
        assert op['status'] == 'succeeded', op
        assert op['mode'] == 'online'
        # Both overlays prepared first, then one paused section.
        assert [s['name'] for s in op['steps']] == [
            'prepare', 'prepare', 'pause', 'pivot', 'resume']
        assert op['pause_ms'] is not None  # QEMU's STOP..RESUME window
        paused = [b for b in batches if 'stop' in b]
        assert paused == [['stop', 'transaction', 'cont']]
        assert vm.status() == 'running'

        group = dep.ok('GET', '/v1/snapshot-groups/%s'
                       % out['snapshot_group']['id'])['snapshot_group']
        assert {s['status'] for s in group['snapshots']} == {'available'}
        actives = _actives(dep)
        # The registered paths keep the live layers; each snapshot is a
        # file of its own under its disk's (issue 20).
        snaps = {}
        for name in ('vda', 'vdb'):
            assert actives[name] == paths[name]
            snaps[name] = images.backing_file(actives[name])
            assert snaps[name] not in (None, paths[name])
        # After the snapshot the guest writes into the new layers.
        _write(vm, actives['vda'], 0xa2, 0)
        _write(vm, actives['vdb'], 0xb2, 0)
        assert testvm.read_pattern_ok(snaps['vda'], 0xa1, 0, MiB)
        assert testvm.read_pattern_ok(snaps['vdb'], 0xb1, 0, MiB)
        assert testvm.read_pattern_ok(actives['vda'], 0xa2, 0, MiB)
        assert testvm.read_pattern_ok(actives['vdb'], 0xb2, 0, MiB)

        # Revert needs the server shut off.
        code, body = dep.api('POST', '/v1/snapshot-groups/%s/revert'
                             % group['id'], None, 'p1-token')
        assert code == 409, body
        vm.kill()
        ops = dep.ok('POST', '/v1/snapshot-groups/%s/revert' % group['id'],
                     status=202)['operations']
        assert len(ops) == 2
        for o in ops:
            assert dep.wait_operation(o['id'])['status'] == 'succeeded'
        reverted = _actives(dep)
        for name, pattern in (('vda', 0xa1), ('vdb', 0xb1)):
            assert reverted[name] == paths[name]
            assert images.backing_file(reverted[name]) == snaps[name]
            assert testvm.read_pattern_ok(reverted[name], pattern, 0, MiB)

        # Delete the group: each member merges into its live layer.
        ops = dep.ok('DELETE', '/v1/snapshot-groups/%s' % group['id'],
                     status=202)['operations']
        for o in ops:
            assert dep.wait_operation(o['id'])['status'] == 'succeeded'
        assert dep.ok('GET', '/v1/snapshot-groups/%s'
                      % group['id'])['snapshot_group']['snapshots'] == []
        for name, pattern in (('vda', 0xa1), ('vdb', 0xb1)):
            live = _actives(dep)[name]
            assert testvm.read_pattern_ok(live, pattern, 0, MiB)
            images.check(live)
    finally:
        vm.kill()


@pytest.fixture
def two_disk_vm(tmp_path):
    imgdir = tmp_path / 'images'
    imgdir.mkdir()
    paths = [str(imgdir / 'a.qcow2'), str(imgdir / 'b.qcow2')]
    for path in paths:
        images.create_base(path, 16 * MiB)
    sock = '/tmp/ls-grpd-%d.sock' % os.getpid()
    vm = TwoDiskVM(paths[0], paths[1], sock, name='grpd').start()
    yield vm, str(imgdir), paths, sock
    vm.kill()


def test_driver_rerun_is_idempotent(two_disk_vm, monkeypatch):
    from agent.driver.qemu import driver as qemu
    from agent.steps import StepRecorder
    vm, imgdir, paths, sock = two_disk_vm
    driver = qemu.QemuDriver([imgdir])
    disks = [{'driver': 'qemu', 'qmp_socket': sock, 'path': p}
             for p in paths]
    first = driver.create_snapshots(disks, ['a-op', 'b-op'], StepRecorder())
    # The disks keep their paths; the snapshots are the new files.
    assert [r['disk']['path'] for r in first['snapshots']] == paths
    assert [r['snapshot']['path'] for r in first['snapshots']] == [
        os.path.join(imgdir, 'a-op.qcow2'), os.path.join(imgdir, 'b-op.qcow2')]
    batches = []
    real_send = qmp.QMPSession.send
    monkeypatch.setattr(qmp.QMPSession, 'send', lambda self, c: (
        batches.append(c), real_send(self, c))[1])
    rec = StepRecorder()
    again = driver.create_snapshots(disks, ['a-op', 'b-op'], rec)
    assert [(r['snapshot'], r['disk']) for r in again['snapshots']] == \
        [(r['snapshot'], r['disk']) for r in first['snapshots']]
    # No second pause, no step.
    assert not [b for b in batches if ('stop', None) in b]
    assert rec.steps == []
    assert vm.status() == 'running'


def test_driver_failed_transaction_pivots_nothing(two_disk_vm, monkeypatch):
    from agent.driver.qemu import driver as qemu
    from agent import exception
    from agent.steps import StepRecorder
    vm, imgdir, paths, sock = two_disk_vm
    driver = qemu.QemuDriver([imgdir])
    disks = [{'driver': 'qemu', 'qmp_socket': sock, 'path': p}
             for p in paths]
    real_paused = driver._paused

    def paused(conn, rec, was_running, step, commands, **detail):
        # A third action QEMU refuses: the whole transaction fails.
        cmd, args = commands[0]
        args = {'actions': args['actions'] + [{
            'type': 'blockdev-snapshot',
            'data': {'node': 'no-such-node', 'overlay': 'nor-this'}}]}
        return real_paused(conn, rec, was_running, step, [(cmd, args)],
                           **detail)

    monkeypatch.setattr(driver, '_paused', paused)
    with pytest.raises(exception.QMPError):
        driver.create_snapshots(disks, ['a-x', 'b-x'], StepRecorder())
    assert vm.status() == 'running'
    files = {os.path.realpath(n['file']) for n in vm.nodes()}
    assert files == {os.path.realpath(p) for p in paths}
    assert sorted(os.listdir(imgdir)) == ['a.qcow2', 'b.qcow2']
