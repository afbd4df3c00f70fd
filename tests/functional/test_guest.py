"""Crash consistency with a real Linux guest writing while livesnap works.

The guest (tests/functional/guest.py: the cloud kernel and a busybox
initramfs under TCG, its disk on NVMe) writes 4 KiB blocks stamped with
their sequence number, each fsynced before the next.  While it writes, the
test takes snapshots, deletes the newest one (online block-stream into the
live image) and a middle one (streamed into the snapshot above it), and
takes one more.  Then the guest is told to stop and powers off.

Every snapshot must hold a gap-free prefix 0..k-1 of the sequence, k at
least what the guest had reported before the request and at most one more
than it had reported once the operation finished; the prefixes grow along
the chain; merges change no snapshot's content; the live image holds
exactly the blocks the guest wrote; every image passes ``qemu-img check``.
No timing is asserted: pause figures are printed.
"""

import os

import pytest

from agent import images
from conductor.db import api as db
from livesnap_tools import fixtures
from tests.functional import guest
from tests.functional import scenarios
from tests.functional import tree_check

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(guest.missing() is not None,
                       reason='real guest unavailable: %s' % guest.missing()),
]

MiB = 1024 * 1024
SERVER = 'guest1'
#: blocks the guest writes between two API requests
STRIDE = 15
#: upper bound on the guest's run; it is stopped well before
MAX_BLOCKS = 2000
OP_TIMEOUT = 300
CREATE_STEPS = ['prepare', 'pause', 'pivot', 'resume']
MERGE_STEPS = ['prepare', 'pause', 'merge', 'resume', 'reparent', 'delete',
               'purge']


def _create(dep, name):
    body = dep.ok('POST', '/v1/servers/%s/snapshots' % SERVER,
                  {'snapshot': {'name': name, 'disk': 'vda'}}, status=202)
    op = dep.wait_operation(body['operation']['id'], timeout=OP_TIMEOUT)
    return body['snapshot']['id'], op


def _delete(dep, snap_id):
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                status=202)['operation']
    return dep.wait_operation(op['id'], timeout=OP_TIMEOUT)


def _prefix(image, what):
    seqs = guest.read_sequence(image)
    k = guest.gap_free_prefix(seqs)
    assert k is not None, '%s is not a gap-free prefix: %s' % (
        what, guest.describe(seqs))
    return k


def _show(label, op):
    pause = op['pause_ms']
    print('  %-10s %-6s %-9s pause_ms=%-7s %s' % (
        label, op['mode'], op['status'],
        '%.1f' % pause if pause is not None else None,
        ' '.join('%s:%.0f' % (s['name'], s['duration_ms'] or 0)
                 for s in op['steps'])))


def run_guest_scenario(dep, tmp_path, database_url):
    image = scenarios.new_base_image(dep, SERVER, size=32 * MiB)
    sock = scenarios.short_socket_path(SERVER)
    vm = guest.LinuxGuest(image, sock, str(tmp_path / 'serial.log'),
                          max_blocks=MAX_BLOCKS, delay_ms=20, name=SERVER)
    dep.register_server(SERVER, image, qmp_socket=sock)
    ops = []
    taken = {}  # snapshot id -> (name, reported before, after, prefix)
    try:
        vm.start()
        boot_s = vm.wait_ready()
        vm.wait_written(STRIDE)

        def snapshot(name):
            before = vm.written()
            snap_id, op = _create(dep, name)
            after = vm.written()
            ops.append(('create %s' % name, op))
            assert op['status'] == 'succeeded', op
            assert op['mode'] == 'online', op
            assert [s['name'] for s in op['steps']] == CREATE_STEPS, op
            assert op['pause_ms'] is not None
            # The snapshot is now a read-only backing file, flushed by the
            # pause: its content is final.
            path = _images(database_url)[1][snap_id]
            k = _prefix(path, name)
            assert before <= k <= after + 1, (name, before, k, after)
            taken[snap_id] = (name, before, after, k)
            vm.wait_written(after + STRIDE)
            return snap_id

        def delete(snap_id):
            name = taken[snap_id][0]
            op = _delete(dep, snap_id)
            ops.append(('delete %s' % name, op))
            assert op['status'] == 'succeeded', op
            assert op['mode'] == 'merge', op
            assert [s['name'] for s in op['steps']] == MERGE_STEPS, op
            assert op['pause_ms'] is not None
            del taken[snap_id]
            vm.wait_written(vm.written() + STRIDE)

        s0 = snapshot('s0')
        s1 = snapshot('s1')
        s2 = snapshot('s2')
        s3 = snapshot('s3')
        delete(s3)              # the newest: streamed into the live image
        delete(s1)              # a middle one: streamed into s2
        s4 = snapshot('s4')     # and a pivot after the merges
        reported = vm.written()
        assert vm.status() == 'running'
        done = vm.stop()
    except Exception:
        print('--- guest console ---\n' + vm.log()[-3000:])
        raise
    finally:
        vm.kill()

    assert done is not None and done >= reported, (done, reported)
    assert vm.errors() == []

    # The tree on disk: live -> s4 -> s2 -> s0.
    live, paths = _images(database_url)
    assert set(paths) == {s0, s2, s4}
    assert images.backing_file(live) == paths[s4]
    assert images.backing_file(paths[s4]) == paths[s2]
    assert images.backing_file(paths[s2]) == paths[s0]
    assert images.backing_file(paths[s0]) is None
    visible = {s['id']: s for s in dep.ok(
        'GET', '/v1/servers/%s/snapshots' % SERVER)['snapshots']}
    assert visible[s2]['parent_id'] == s0
    assert visible[s4]['parent_id'] == s2

    # Content: merges changed nothing a snapshot shows, the prefixes grow
    # along the chain, and the live image has every block written.
    chain = [s0, s2, s4]
    prefixes = []
    for snap_id in chain:
        name, before, after, k = taken[snap_id]
        assert _prefix(paths[snap_id], name) == k, name
        prefixes.append(k)
    assert prefixes == sorted(prefixes), prefixes
    live_k = _prefix(live, 'live image')
    assert live_k == done, (live_k, done)
    assert prefixes[-1] <= live_k

    for path in [live] + list(paths.values()):
        images.check(path)
    on_disk = {os.path.join(dep.image_dir, n)
               for n in os.listdir(dep.image_dir) if n.endswith('.qcow2')}
    assert on_disk == {live} | set(paths.values())

    print('\nreal guest: ready %.1f s after start, %d blocks written, '
          'console log in %s' % (boot_s, done, tmp_path))
    print('  snapshot prefixes (reported before <= k <= after + 1):')
    for snap_id in chain:
        name, before, after, k = taken[snap_id]
        print('    %s: %d <= %d <= %d + 1' % (name, before, k, after))
    print('  operations (step:duration ms):')
    for label, op in ops:
        _show(label, op)
    return ops


def _images(database_url):
    """(live image, {snapshot id: image}) of the guest's disk."""
    disk, snaps = tree_check.db_rows(database_url, SERVER)
    return disk.active_image, {s.id: s.image for s in snaps
                               if s.status == 'available'}


def test_real_guest_over_rabbitmq(tmp_path, rabbit_url, postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url)) as dep:
        run_guest_scenario(dep, tmp_path, postgres_url)


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_real_guest_in_process(inprocess, tmp_path, conf):
    run_guest_scenario(inprocess, tmp_path, db.CONF.database.connection)
