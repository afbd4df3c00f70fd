"""Quiesce with a real Linux guest: qemu-ga in the guest, an ext4 file
system on its NVMe disk, files being written while livesnap snapshots.

The guest (tests/functional/guest.py, ``build_qga_initramfs``: the cloud
kernel, busybox, qemu-ga and its libraries, the virtio-serial modules)
mounts the ext4 file system and keeps writing files (no fsync).  A mounted
ext4 has ``needs_recovery`` set on disk; freezing it (``FIFREEZE``) flushes
the journal and clears the flag until the thaw.  So:

* a snapshot with ``quiesce=required`` is ``application`` consistent: its
  file system has no ``needs_recovery`` and ``e2fsck -fn`` finds it clean,
  with no journal to replay;
* a snapshot with ``quiesce=off`` is ``crash`` consistent: the flag is set
  (it would mount only after a journal replay);
* a snapshot group with ``quiesce=required`` (here of the guest's one disk:
  the group's own path, ``create_snapshots`` and its QMP transaction) is
  frozen once around its one pause and clean like the first.

Steps ``freeze`` and ``thaw`` appear around the pause.  No timing is
asserted.
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
    pytest.mark.skipif(guest.qga_missing() is not None,
                       reason='quiesce guest unavailable: %s'
                       % guest.qga_missing()),
]

SERVER = 'qguest1'
OP_TIMEOUT = 300


def _create(dep, name, quiesce):
    return guest.create_snapshot(dep, SERVER, name, quiesce, OP_TIMEOUT)


def _image_of(database_url, snap_id):
    _disk, snaps = tree_check.db_rows(database_url, SERVER)
    return {s.id: s.image for s in snaps}[snap_id]


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_quiesced_snapshot_is_clean(inprocess, tmp_path, conf):
    dep = inprocess
    database_url = db.CONF.database.connection
    image = guest.ext4_image(
        os.path.join(dep.image_dir, '%s-vda.qcow2' % SERVER))
    sock = scenarios.short_socket_path(SERVER)
    qga_sock = os.path.join(os.path.dirname(sock), 'qga.sock')
    vm = guest.LinuxGuest(image, sock, str(tmp_path / 'serial.log'),
                          name=SERVER, qga_socket=qga_sock,
                          initrd=guest.build_qga_initramfs())
    dep.ok('POST', '/v1/servers', {'server': {
        'id': SERVER, 'name': SERVER, 'project_id': 'p1',
        'host': fixtures.HOST, 'qmp_socket': sock, 'qga_socket': qga_sock,
        'disks': [{'name': 'vda', 'path': image}]}},
        token='admin-token', status=201)
    try:
        vm.start()
        vm.wait_ready()
        vm._wait_for('files being written',
                     lambda: 'LSFILES 30' in vm.log(), 300)

        snap, op = _create(dep, 'app', 'required')
        assert op['status'] == 'succeeded', op
        names = [s['name'] for s in op['steps']]
        assert names == ['prepare', 'freeze', 'pause', 'pivot', 'resume',
                         'thaw'], op
        assert snap['consistency'] == 'application', snap
        features, rc, out = guest.fs_state(
            _image_of(database_url, snap['id']))
        assert 'needs_recovery' not in features, features
        assert rc == 0, out

        # The guest goes on writing after the thaw.
        seen = vm.log().count('LSFILES')
        vm._wait_for('writes after the thaw',
                     lambda: vm.log().count('LSFILES') > seen + 2, 300)

        crash, op2 = _create(dep, 'crash', 'off')
        assert op2['status'] == 'succeeded', op2
        assert 'freeze' not in [s['name'] for s in op2['steps']]
        assert crash['consistency'] == 'crash', crash
        features, _rc, _out = guest.fs_state(
            _image_of(database_url, crash['id']))
        assert 'needs_recovery' in features, features
        # The same guest, a snapshot group: one freeze, one pause.
        body = dep.ok('POST', '/v1/servers/%s/snapshot-groups' % SERVER,
                      {'snapshot_group': {'name': 'grp',
                                          'quiesce': 'required'}},
                      status=202)
        op3 = dep.wait_operation(body['operation']['id'],
                                 timeout=OP_TIMEOUT)
        assert op3['status'] == 'succeeded', op3
        assert [s['name'] for s in op3['steps']] == [
            'prepare', 'freeze', 'pause', 'pivot', 'resume', 'thaw'], op3
        (member,) = dep.ok('GET', '/v1/snapshot-groups/%s'
                           % body['snapshot_group']['id'])[
                               'snapshot_group']['snapshots']
        assert member['consistency'] == 'application', member
        features, rc, out = guest.fs_state(
            _image_of(database_url, member['id']))
        assert 'needs_recovery' not in features, features
        assert rc == 0, out
        print('\nquiesce: %s' % ' '.join(
            '%s:%.0f' % (s['name'], s['duration_ms'] or 0)
            for s in op['steps']))
    finally:
        vm.kill()
    for path in (image,):
        images.check(path)
