"""End-to-end scenarios shared by the in-process and multi-process tests.

Each takes a deployment (see livesnap_tools.fixtures) and drives it only
through the REST API, checking the disks with qemu-img / qemu-io from outside.
"""

import os
import tempfile

from agent import images
from livesnap_tools import testvm

MiB = 1024 * 1024


def new_base_image(dep, server_id, size=64 * MiB):
    base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server_id)
    images.create_base(base, size)
    return base


def short_socket_path(name):
    """A QMP socket path well under the 107-byte limit of unix sockets."""
    directory = tempfile.mkdtemp(prefix='ls-')
    return os.path.join(directory, '%s.qmp' % name)


def start_vm(dep, tmp_path, server_id='srv1', size=64 * MiB):
    base = new_base_image(dep, server_id, size)
    sock = short_socket_path(server_id)
    vm = testvm.TestVM(base, sock, name=server_id).start()
    try:
        dep.register_server(server_id, base, qmp_socket=sock)
    except BaseException:
        vm.kill()
        raise
    return vm, base


def create_snapshot(dep, server_id, name, disk='vda', token='p1-token'):
    body = dep.ok('POST', '/v1/servers/%s/snapshots' % server_id,
                  {'snapshot': {'name': name, 'disk': disk}}, token=token,
                  status=202)
    assert body['snapshot']['status'] == 'creating'
    assert body['operation']['action'] == 'create'
    op = dep.wait_operation(body['operation']['id'], token=token)
    return body['snapshot']['id'], op


def online_create(dep, tmp_path):
    """Snapshot a running VM; data before it stays in the snapshot, data
    after it lands in the new layer, and the VM never stops.
    """
    vm, base = start_vm(dep, tmp_path)
    try:
        vm.write(0xaa, 0, MiB)
        vm.write(0x11, 4 * MiB, MiB)
        snap_id, op = create_snapshot(dep, 'srv1', 'before-upgrade')
        assert op['status'] == 'succeeded', op
        assert op['mode'] == 'online'
        assert [s['name'] for s in op['steps']] == [
            'prepare', 'pause', 'pivot', 'resume']
        assert all(s['status'] == 'done' for s in op['steps'])
        assert op['pause_ms'] is not None and op['pause_ms'] >= 0
        assert vm.status() == 'running'

        snap = dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot']
        assert snap['status'] == 'available'
        assert snap['current'] is True
        assert snap['parent_id'] is None
        assert snap['size_bytes'] > 0
        disk = dep.ok('GET', '/v1/servers/srv1',
                      token='admin-token')['server']['disks'][0]
        # The registered path keeps the live layer; the snapshot is a
        # file of its own beside it (issue 20).
        active = disk['active_image']
        assert active == base
        snap_image = images.backing_file(active)
        assert snap_image != base and \
            os.path.dirname(snap_image) == dep.image_dir
        assert disk['snapshot_id'] == snap_id and disk['busy'] is False

        # The VM keeps writing, into the new live layer.
        vm.write(0xbb, 0, MiB)
        vm.write(0xcc, 8 * MiB, MiB)
        vm.flush()
        assert vm.top_image() == active
        # The snapshot holds exactly what was written before it...
        assert testvm.read_pattern_ok(snap_image, 0xaa, 0, MiB)
        assert testvm.read_pattern_ok(snap_image, 0x11, 4 * MiB, MiB)
        assert testvm.read_pattern_ok(snap_image, 0x00, 8 * MiB, MiB)
        # ...and the live disk sees old and new data.
        assert testvm.read_pattern_ok(active, 0xbb, 0, MiB)
        assert testvm.read_pattern_ok(active, 0x11, 4 * MiB, MiB)
        assert testvm.read_pattern_ok(active, 0xcc, 8 * MiB, MiB)
        for image in (snap_image, active):
            images.check(image, force_share=True)

        # A second snapshot builds on the first.
        snap2, op2 = create_snapshot(dep, 'srv1', 'second')
        assert op2['status'] == 'succeeded', op2
        listing = dep.ok('GET', '/v1/servers/srv1/snapshots')['snapshots']
        by_id = {s['id']: s for s in listing}
        assert by_id[snap2]['parent_id'] == snap_id
        assert by_id[snap2]['current'] and not by_id[snap_id]['current']
        assert vm.status() == 'running'
        return vm, base
    finally:
        vm.kill()
