"""The real Linux guest as a libvirt domain: quiesced and crash snapshots
taken by the libvirt driver while the guest writes.

ONE boot (TCG is slow): the guest (tests/functional/guest.py,
``LibvirtGuest``: the cloud kernel, busybox, qemu-ga and the virtio
modules, booted directly by libvirt) mounts the ext4 file system of its
virtio disk ``vda`` and appends sequence-stamped lines to ``/seq``, each
fsynced before it prints ``LSWROTE i``, rewriting other files without
fsync in between.  libvirt connects the guest agent's channel
(``org.qemu.guest_agent.0``).  The agent runs ``[agent] driver =
libvirt`` in process; the domain is registered by domain.

* A ``quiesce=required`` snapshot: ``fsFreeze`` before the pause,
  ``fsThaw`` after it (steps ``freeze``/``thaw``), ``application``
  consistency; its file system is clean without a journal replay
  (``needs_recovery`` clear, ``e2fsck -fn`` passes) and ``/seq`` holds a
  gap-free prefix ``0..k-1``, ``k`` at least what the guest had reported
  before the request and at most one more than it had once it finished.
* The guest keeps running and writing; a ``quiesce=off`` snapshot is
  ``crash`` consistent (``needs_recovery`` set) and after a replay holds a
  longer gap-free prefix.
* The guest keeps writing; the crash snapshot is deleted: it has one
  child, the live layer, so it is merged online (``blockPull``, or
  ``blockCommit`` and a pivot when the live layer holds less), its steps
  recorded; the guest runs on, the chain is live -> quiesced, every layer
  passes ``qemu-img check``, the quiesced snapshot still holds its prefix
  and the live layer (replayed, once the domain is shut off) every line
  the guest had reported.
* A revert through the REST API is refused (409 ``server_running``)
  while the domain runs; once it is shut off, the disk's new live layer
  sits on the quiesced snapshot, the domain's definition names it, and it
  shows the snapshot's prefix.

No timing is asserted.  Skipped without libvirt or the quiesce guest's
parts (qemu-ga, e2fsprogs, the virtio modules).  The guest's set-up (an
ext4 image, its file system's state) is tests/functional/guest.py's, shared
with test_guest_quiesce.py; a domain whose guest agent never answers
(``required`` refused before the pause, ``preferred`` crash-consistent) is
the driver contract suite's (test_driver_contract.py).
"""

import os

import pytest

from agent import images
from conductor.db import api as db
from livesnap_tools import fixtures
from livesnap_tools import libvirtd
from tests.functional import guest
from tests.functional import tree_check

_MISSING = guest.qga_missing(guest.LIBVIRT_QGA_MODULES)

pytestmark = [
    pytest.mark.functional,
    pytest.mark.skipif(_MISSING is not None,
                       reason='libvirt guest unavailable: %s' % _MISSING),
]

SERVER = 'lvguest1'
OP_TIMEOUT = 300
QUIESCED_STEPS = ['prepare', 'freeze', 'pause', 'snapshot', 'resume', 'thaw']
CRASH_STEPS = ['prepare', 'pause', 'snapshot', 'resume']
#: An online merge into the live layer: streamed (blockPull), then the
#: flush pause before the delete ...
STREAM_STEPS = ['prepare', 'merge', 'reparent', 'pause', 'resume', 'delete',
                'purge']
#: ... or the live layer committed into the snapshot, and the pivot.
COMMIT_STEPS = ['prepare', 'merge', 'pause', 'snapshot', 'resume',
                'reparent', 'pause', 'resume', 'delete', 'purge']


@pytest.fixture
def libvirt_agent(libvirt_up, conf):
    """The in-process agent's driver: libvirt (set before ``inprocess``
    starts it).
    """
    conf.set('driver', 'libvirt', group='agent')
    conf.set('uri', libvirtd.URI, group='libvirt')
    conf.set('job_poll_interval', 0.05, group='libvirt')


def _create(dep, name, quiesce):
    return guest.create_snapshot(dep, SERVER, name, quiesce, OP_TIMEOUT)


def _delete(dep, snap_id):
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                status=202)['operation']
    return dep.wait_operation(op['id'], timeout=OP_TIMEOUT)


def _definition_chain(dom):
    """The chain of ``vda`` in the domain's definition, top first."""
    import xml.etree.ElementTree as ET

    from agent.driver.libvirt import guest as lvguest
    root = ET.fromstring(dom.XMLDesc(0))
    for elem in root.findall('./devices/disk'):
        if elem.find('target').get('dev') == 'vda':
            return lvguest.chain(elem)
    raise AssertionError('no vda in %s' % dom.name())


def _prefix(image, what, replay=False):
    seqs = guest.read_fs_sequence(image, replay=replay)
    k = guest.gap_free_prefix(seqs)
    assert k is not None, '%s: /seq is not a gap-free prefix: %s' % (
        what, guest.describe(seqs))
    return k


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_real_guest_on_libvirt(libvirt_agent, inprocess, tmp_path):
    dep = inprocess
    database_url = db.CONF.database.connection
    base = guest.ext4_image(
        os.path.join(dep.image_dir, '%s-vda.qcow2' % SERVER))
    vm = guest.LibvirtGuest(base, str(tmp_path / 'serial.log'),
                            libvirtd.URI, name=SERVER)
    try:
        vm.start()
        boot_s = vm.wait_ready(timeout=300)
        vm.wait_written(10, timeout=300)
        server = dep.ok('POST', '/v1/servers', {'server': {
            'id': SERVER, 'name': SERVER, 'project_id': 'p1',
            'host': fixtures.HOST, 'driver': 'libvirt',
            'domain': vm.name}}, token='admin-token', status=201)['server']
        assert [d['name'] for d in server['disks']] == ['vda']

        # Quiesced: frozen around the pause, clean without a replay.
        before = vm.written()
        app, op = _create(dep, 'app', 'required')
        after = vm.written()
        assert op['status'] == 'succeeded', op
        assert op['mode'] == 'online', op
        assert [s['name'] for s in op['steps']] == QUIESCED_STEPS, op
        assert app['consistency'] == 'application', app
        disk, snaps = tree_check.db_rows(database_url, SERVER)
        app_image = {s.id: s.image for s in snaps}[app['id']]
        assert app_image == base
        features, rc, out = guest.fs_state(app_image)
        assert 'needs_recovery' not in features, features
        assert rc == 0, out
        k_app = _prefix(app_image, 'quiesced snapshot')
        assert before <= k_app <= after + 1, (before, k_app, after)

        # The guest runs on and writes after the thaw.
        assert vm.status() == 'running'
        vm.wait_written(after + 10, timeout=300)

        # Crash-consistent: needs a replay, then a longer prefix.
        before = vm.written()
        crash, op2 = _create(dep, 'crash', 'off')
        after = vm.written()
        assert op2['status'] == 'succeeded', op2
        assert [s['name'] for s in op2['steps']] == CRASH_STEPS, op2
        assert crash['consistency'] == 'crash', crash
        disk, snaps = tree_check.db_rows(database_url, SERVER)
        crash_image = {s.id: s.image for s in snaps}[crash['id']]
        features, _rc, _out = guest.fs_state(crash_image)
        assert 'needs_recovery' in features, features
        k_crash = _prefix(crash_image, 'crash snapshot', replay=True)
        assert before <= k_crash <= after + 1, (before, k_crash, after)
        assert k_app < k_crash
        assert vm.status() == 'running'
        vm.wait_written(after + 5, timeout=300)
        live = disk.active_image
        # The chain on disk: live -> crash -> app (the base).
        assert images.backing_file(live) == crash_image
        assert images.backing_file(crash_image) == app_image
        assert images.backing_file(app_image) is None

        # The crash snapshot has one child, the live layer: merged
        # online while the guest writes.
        op3 = _delete(dep, crash['id'])
        assert (op3['status'], op3['mode']) == ('succeeded', 'merge'), op3
        merge_steps = [s['name'] for s in op3['steps']]
        assert merge_steps in (STREAM_STEPS, COMMIT_STEPS), op3
        assert vm.status() == 'running'
        vm.wait_written(vm.written() + 5, timeout=300)
        disk, snaps = tree_check.db_rows(database_url, SERVER)
        assert [s.id for s in snaps if s.status == 'available'] == [
            app['id']]
        merged = disk.active_image
        assert _definition_chain(vm.dom) == [merged, app_image]
        assert images.backing_file(merged) == app_image
        assert not os.path.exists(
            live if merged == crash_image else crash_image)
        assert _prefix(app_image, 'quiesced snapshot after the merge') \
            == k_app
        assert vm.errors() == []

        # Revert through the API: refused while the domain runs, then
        # (shut off, definition kept) a new live layer on the snapshot.
        status, body = dep.api('POST', '/v1/snapshots/%s/revert' % app['id'])
        assert status == 409, body
        assert body['error']['code'] == 'server_running', body
        reported = vm.written()
        vm.dom.destroy()
        for path in (merged, app_image):
            images.check(path)
        # Every line the guest had reported is in the merged live layer.
        k_live = _prefix(merged, 'live layer after the merge', replay=True)
        assert k_live >= reported, (k_live, reported)
        body = dep.ok('POST', '/v1/snapshots/%s/revert' % app['id'],
                      status=202)
        op4 = dep.wait_operation(body['operation']['id'], timeout=OP_TIMEOUT)
        assert op4['status'] == 'succeeded', op4
        disk, snaps = tree_check.db_rows(database_url, SERVER)
        reverted = disk.active_image
        assert reverted not in (merged, app_image)
        assert _definition_chain(vm.dom) == [reverted]  # shut off: the top
        assert images.backing_file(reverted) == app_image
        images.check(reverted)
        assert _prefix(reverted, 'reverted live layer') == k_app
    except Exception:
        print('--- guest console ---\n' + vm.log()[-3000:])
        raise
    finally:
        vm.kill()

    print('\nlibvirt guest: ready %.1f s after start; quiesced prefix %d, '
          'crash prefix %d, live prefix %d after the merge; steps %s' % (
              boot_s, k_app, k_crash, k_live, '; '.join(
                  ' '.join('%s:%.0f' % (s['name'], s['duration_ms'] or 0)
                           for s in o['steps'])
                  for o in (op, op3, op4))))
