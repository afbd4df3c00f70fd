"""New disks from a snapshot of a running QEMU VM (in process)."""

import subprocess

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from tests.functional import scenarios

pytestmark = pytest.mark.functional

MiB = scenarios.MiB


def _same(a, b):
    return subprocess.run(['qemu-img', 'compare', '-U', a, b],
                          capture_output=True).returncode == 0


def _clone(dep, snap_id, mode, disk):
    op = dep.ok('POST', '/v1/snapshots/%s/clone' % snap_id,
                {'clone': {'mode': mode, 'disk': disk}},
                status=202)['operation']
    op = dep.wait_operation(op['id'], timeout=120)
    assert op['status'] == 'succeeded', op
    with db.transaction() as s:
        for d in s.get(models.Server, 'srv1').disks:
            if d.name == disk:
                return op, d.active_image


def test_clone_flat_and_linked_from_running_vm(inprocess, tmp_path):
    dep = inprocess
    vm, base = scenarios.start_vm(dep, tmp_path)
    try:
        vm.write(0xaa, 0, MiB)
        vm.write(0x11, 4 * MiB, MiB)
        snap_id, op = scenarios.create_snapshot(dep, 'srv1', 's1')
        assert op['status'] == 'succeeded' and op['mode'] == 'online', op
        # The registered path keeps the live layer; the snapshot is the
        # file under it (issue 20).
        snap_image = images.backing_file(base)
        assert snap_image != base
        vm.write(0xbb, 0, MiB)
        vm.flush()

        op, flat = _clone(dep, snap_id, 'flat', 'copy')
        assert [s['name'] for s in op['steps']] == ['copy']
        assert op['progress'] == 100.0
        assert images.backing_file(flat) is None
        assert _same(snap_image, flat)

        op, linked = _clone(dep, snap_id, 'linked', 'layer')
        assert [s['name'] for s in op['steps']] == ['prepare']
        assert images.backing_file(linked) == snap_image
        assert _same(snap_image, linked)
        assert vm.status() == 'running'

        # The snapshot now has the live layer and the clone: deleting it
        # is logical, and its file stays for the clone.
        op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id)['operation']
        op = dep.wait_operation(op['id'])
        assert op['status'] == 'succeeded' and op['mode'] == 'logical', op
        images.check(linked, force_share=True)
        assert _same(snap_image, linked)
        assert _same(flat, linked)
    finally:
        vm.kill()
