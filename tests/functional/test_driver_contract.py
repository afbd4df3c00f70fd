"""The driver contract: the same cases against every agent driver.

As nova's ``_VirtDriverTestCase`` does for its virt drivers, each case
runs once per driver (``fake``, ``qemu``, ``libvirt``), the driver loaded
by name through the agent's loader; what differs between them (how a VM
and its disk locators are made, step names, what a driver supports) is in
its harness (tests/functional/driver_harness.py).  Every case checks the
result the driver returns, the steps it records, the chain the VM runs
on, what each layer shows (``qemu-io -r -U``; the fake holds no data) and
that running the same call again gives the same result (and a task sent
twice to the agent's task runner is answered from its journal).  The
crash-point cases kill the agent's task runner at every step of an online
create and of an online merge and check that the restarted agent's
journal replay finishes the operation (tests/functional/driver_crash.py).

The libvirt cases are skipped without libvirt (libvirtd is started for the
run by the ``libvirt_up`` fixture).  No timing assertions.
"""

import pytest

from agent import exception
from agent.steps import StepRecorder
from livesnap import context
from tests.functional import driver_crash
from tests.functional import driver_harness
from tests.functional.driver_harness import CHUNK
from tests.functional.driver_harness import MiB

pytestmark = pytest.mark.functional

DRIVERS = ('fake', 'qemu', 'libvirt')


@pytest.fixture(params=DRIVERS)
def h(request, tmp_path):
    """The harness of one driver; its VM is removed afterwards."""
    if request.param == 'libvirt':
        pytest.importorskip('libvirt')
        request.getfixturevalue('libvirt_up')
    harness = driver_harness.HARNESSES[request.param](tmp_path)
    yield harness
    harness.cleanup()


def names(rec):
    return [s['name'] for s in rec.steps]


def _same(again, first):
    """A re-run's result against the first run's: the same, but for why
    its consistency is what it is and when the snapshot was taken (a
    re-run cannot know a freeze or a pause it did not see).
    """
    def strip(result):
        if isinstance(result, dict):
            return {k: strip(v) for k, v in result.items()
                    if k not in ('consistency_reason', 'taken_at')}
        if isinstance(result, list):
            return [strip(v) for v in result]
        return result
    assert strip(again) == strip(first)


def _after_create(h, disk, layer_name):
    """``(live, snapshot)`` paths after a create of ``layer_name`` on
    ``disk``: a driver that keeps the live layer at the disk's path (issue
    20) gives the snapshot the layer's name; the others make the new layer
    the live one and the old live file the snapshot.
    """
    new = h.new_path(disk, layer_name)
    if h.keeps_path:
        return disk['path'], new
    return new, disk['path']


def _assert_merge_steps(h, rec, online, direction):
    expected = h.merge_steps.get((online, direction))
    if expected is None:
        assert 'merge' in names(rec) and 'delete' in names(rec), rec.steps
    else:
        assert names(rec) == expected, rec.steps
    assert all(s['status'] == 'done' for s in rec.steps), rec.steps
    assert not rec.paused


# -- create -------------------------------------------------------------------

def test_create_online(h):
    vda, vdb = h.make_vm(('vda', 'vdb'))
    base = vda['path']
    h.write(vda, 0xaa, 0)
    h.write(vda, 0xab, CHUNK)
    h.start([vda, vdb])
    rec = StepRecorder()
    res = h.driver.create_snapshot(vda, 's1', rec)
    new, base = _after_create(h, vda, 's1')
    assert res['snapshot'] == h.image(base)
    assert res['disk'] == dict(vda, path=new)
    assert res['online'] is True
    assert res['size_bytes'] == h.size(base)
    assert names(rec) == h.online_create_steps
    assert all(s['status'] == 'done' for s in rec.steps)
    if 'pause' in h.online_create_steps:
        assert rec.pause_ms is not None and rec.agent_pause_ms is not None
    assert not rec.paused
    h.check_online_create(rec)
    assert h.status() == 'running'
    assert h.live_chain(res['disk']) == [new, base]
    assert h.backing(new) == base
    # The other disk was left alone; the definition follows the switch.
    assert h.live_chain(vdb) == [vdb['path']]
    assert h.defined_chain(vda) in (None, new)

    # A re-run (a crash after the switch) finds it done.
    rec2 = StepRecorder()
    _same(h.driver.create_snapshot(vda, 's1', rec2), res)
    assert 'pause' not in names(rec2)
    assert names(rec2) == h.rerun_create_steps
    assert h.live_chain(res['disk']) == [new, base]

    # The VM writes into the new layer only.
    h.write(res['disk'], 0xbb, 0)
    h.write(res['disk'], 0xcc, 2 * CHUNK)
    h.settle([res['disk']])
    h.assert_content(base, [(0xaa, 0, CHUNK), (0xab, CHUNK, CHUNK),
                            (0x00, 2 * CHUNK, CHUNK)])
    shows = [(0xbb, 0, CHUNK), (0xab, CHUNK, CHUNK),
             (0xcc, 2 * CHUNK, CHUNK), (0x00, 3 * CHUNK, CHUNK)]
    h.assert_content(new, shows)

    # A second layer on the first.
    res2 = h.driver.create_snapshot(res['disk'], 's2', StepRecorder())
    new2, snap2 = _after_create(h, res['disk'], 's2')
    assert res2['snapshot'] == h.image(snap2)
    assert h.live_chain(res2['disk']) == [new2, snap2, base]
    h.stop()
    assert h.defined_chain(vda) in (None, new2)
    for path in (base, snap2, new2):
        h.check(path)
    h.assert_content(new2, shows)


def test_create_online_paused_vm_stays_paused(h):
    (disk,) = h.make_vm()
    h.start([disk])
    h.pause()
    rec = StepRecorder()
    res = h.driver.create_snapshot(disk, 's1', rec)
    assert res['online'] is True
    assert names(rec) == h.online_create_steps
    assert h.status() == 'paused'
    assert not rec.paused
    if h.records_was_running:
        assert rec.steps[1]['detail']['was_running'] is False
    assert h.live_chain(res['disk']) == [res['disk']['path'],
                                         res['snapshot']['path']]
    # What the journal replay does for a VM left paused.
    assert h.driver.resume(res['disk']) is True
    assert h.status() == 'running'
    assert h.driver.resume(res['disk']) is False


def test_create_offline(h):
    disk, vdb = h.make_vm(('vda', 'vdb'))
    base = disk['path']
    h.write(disk, 0xaa, 0)
    rec = StepRecorder()
    res = h.driver.create_snapshot(disk, 's1', rec)
    new, base = _after_create(h, disk, 's1')
    assert res['online'] is False
    assert res['snapshot'] == h.image(base)
    assert res['disk'] == dict(disk, path=new)
    assert names(rec) == h.offline_create_steps
    assert rec.pause_ms is None
    assert h.backing(new) == base
    assert h.defined_chain(disk) in (None, new)
    # Again: nothing more to do, the same answer.
    _same(h.driver.create_snapshot(disk, 's1', StepRecorder()), res)
    h.write(res['disk'], 0xbb, 0)
    h.assert_content(base, [(0xaa, 0, CHUNK)])
    h.assert_content(new, [(0xbb, 0, CHUNK)])
    # The VM starts on the new layer; the other disk was left alone.
    h.start([res['disk'], vdb])
    assert h.live_chain(res['disk']) == [new, base]
    assert h.live_chain(vdb) == [vdb['path']]


def test_create_group_online_one_pause(h):
    """Two disks, one group: every new layer prepared, then one pause
    switches both.
    """
    vda, vdb = h.make_vm(('vda', 'vdb'))
    h.write(vda, 0xa1, 0)
    h.write(vdb, 0xc1, 0)
    h.start([vda, vdb])
    rec = StepRecorder()
    res = h.driver.create_snapshots([vda, vdb], ['g1', 'g2'], rec)
    (g1, s1), (g2, s2) = _after_create(h, vda, 'g1'), _after_create(
        h, vdb, 'g2')
    assert res['online'] is True
    assert [s['disk'] for s in res['snapshots']] == [
        dict(vda, path=g1), dict(vdb, path=g2)]
    assert [s['snapshot'] for s in res['snapshots']] == [
        h.image(s1), h.image(s2)]
    assert names(rec) == h.group_steps
    assert names(rec).count('pause') <= 1
    assert all(s['status'] == 'done' for s in rec.steps)
    assert not rec.paused
    assert h.status() == 'running'
    assert h.live_chain(dict(vda, path=g1)) == [g1, s1]
    assert h.live_chain(dict(vdb, path=g2)) == [g2, s2]
    assert h.defined_chain(vda) in (None, g1)
    assert h.defined_chain(vdb) in (None, g2)
    # Run again: found done.
    _same(h.driver.create_snapshots([vda, vdb], ['g1', 'g2'],
                                    StepRecorder()), res)
    h.stop()
    for path in (g1, s1):
        h.assert_content(path, [(0xa1, 0, CHUNK)])
    for path in (g2, s2):
        h.assert_content(path, [(0xc1, 0, CHUNK)])


# -- quiesce ------------------------------------------------------------------

def test_quiesce_without_a_guest_agent(h):
    """``off`` takes a crash-consistent snapshot without asking the
    guest; ``required`` with no guest agent to answer fails before the
    pause and switches nothing; ``preferred`` goes on crash-consistent,
    saying why.
    """
    (disk,) = h.make_vm(guest_agent=True)
    h.start([disk])
    rec = StepRecorder()
    off = h.driver.create_snapshot(disk, 'q0', rec, quiesce='off')
    base = off['snapshot']['path']
    assert names(rec) == h.online_create_steps
    assert off['consistency'] == 'crash'
    assert off['consistency_reason'] == 'quiesce off'
    disk = off['disk']

    if h.can_freeze_without_guest:
        h.driver.vms[h.VM]['freeze_fails'] = True
    rec = StepRecorder()
    with pytest.raises(exception.QuiesceFailed):
        h.driver.create_snapshot(disk, 'r1', rec, quiesce='required')
    assert names(rec) == h.quiesce_refused_steps
    assert not h.exists(h.new_path(disk, 'r1'))
    assert h.status() == 'running'
    assert h.live_chain(disk) == [disk['path'], base]

    rec = StepRecorder()
    res = h.driver.create_snapshot(disk, 'p1', rec, quiesce='preferred')
    assert [n for n in names(rec)
            if n not in h.failed_freeze_steps] == h.online_create_steps
    assert res['consistency'] == 'crash', res
    assert res['consistency_reason'], res
    h.check_no_agent_reason(res['consistency_reason'])
    assert res['disk']['path'] == _after_create(h, disk, 'p1')[0]
    assert h.status() == 'running'
    h.check_thaw_without_agent(res['disk'])


def test_quiesce_with_a_guest_agent(h):
    """Only the fake has a guest agent without a real guest (the real
    guests are tests/functional/test_guest_quiesce.py and
    test_libvirt_guest.py): frozen around the pause, thawed after.
    """
    if not h.can_freeze_without_guest:
        pytest.skip('%s: a guest agent needs a real guest' % h.name)
    (disk,) = h.make_vm(guest_agent=True)
    h.start([disk])
    assert h.driver.can_quiesce(disk)
    rec = StepRecorder()
    res = h.driver.create_snapshot(disk, 'a1', rec, quiesce='required')
    assert names(rec) == ['prepare', 'freeze', 'snapshot', 'thaw']
    assert res['consistency'] == 'application'
    assert h.driver.thaw_guest(res['disk']) is False
    group = h.driver.create_snapshots([res['disk']], ['a2'], StepRecorder(),
                                      quiesce='required')
    assert group['snapshots'][0]['consistency'] == 'application'


# -- delete, revert, clone ----------------------------------------------------

def test_delete_leaf_and_open_layers(h):
    (disk,) = h.make_vm()
    base = disk['path']
    leaf = h.driver.clone(h.image(base), 'leaf', 'linked',
                          StepRecorder())['image']
    rec = StepRecorder()
    assert h.driver.delete_image(leaf, rec) == {}
    assert names(rec) == ['delete']
    assert not h.exists(leaf['path'])
    assert h.driver.delete_image(leaf, StepRecorder()) == {}  # idempotent
    assert h.exists(base)
    # A layer the running VM reads (or one built upon) is not deleted.
    created = h.driver.create_snapshot(disk, 's1', StepRecorder())
    live, snap = created['disk'], created['snapshot']['path']
    h.start([live])
    for path in (snap, live['path']) if h.knows_open_layers else (snap,):
        with pytest.raises(exception.ImageInUse):
            h.driver.delete_image(h.image(path), StepRecorder())
        assert h.exists(path)


def test_revert(h):
    (disk,) = h.make_vm()
    h.write(disk, 0xa1, 0)
    created = h.driver.create_snapshot(disk, 's1', StepRecorder())
    d1, base = created['disk'], created['snapshot']['path']
    h.write(d1, 0xb1, 0)
    h.start([d1])
    # Refused while the VM runs; nothing is made.
    with pytest.raises(exception.ServerRunning) as err:
        h.driver.revert(d1, h.image(base), 'r1', StepRecorder())
    assert err.value.code == 'server_running'
    r1 = h.new_path(d1, 'r1')
    assert not h.exists(r1)
    h.stop()
    rec = StepRecorder()
    res = h.driver.revert(d1, h.image(base), 'r1', rec)
    # A driver that keeps the live layer at the disk's path (issue 20)
    # makes that path the new layer: the old one is gone with it.
    live = d1['path'] if h.keeps_path else r1
    assert res == {'disk': dict(d1, path=live), 'online': False}
    assert names(rec) == h.revert_steps
    assert h.backing(live) == base
    assert h.defined_chain(d1) in (None, live)
    assert h.driver.revert(d1, h.image(base), 'r1', StepRecorder()) == res
    h.assert_content(live, [(0xa1, 0, CHUNK)])
    if h.keeps_path:
        assert not h.exists(r1)
    else:
        h.assert_content(d1['path'], [(0xb1, 0, CHUNK)])
        # The old live layer is the caller's to delete.
        assert h.driver.delete_image(d1, StepRecorder()) == {}
        assert not h.exists(d1['path'])
        assert h.driver.delete_image(d1, StepRecorder()) == {}
    h.start([res['disk']])
    assert h.live_chain(res['disk']) == [live, base]


@pytest.mark.parametrize('mode', ['linked', 'flat'])
def test_clone(h, mode):
    (disk,) = h.make_vm()
    h.write(disk, 0xa1, 0)
    created = h.driver.create_snapshot(disk, 's1', StepRecorder())
    live, base = created['disk'], created['snapshot']['path']
    h.write(live, 0xb1, CHUNK)
    seen = []
    rec = StepRecorder()
    res = h.driver.clone(h.image(base), 'c1', mode, rec,
                         progress=seen.append)
    new = h.new_path(h.image(base), 'c1')
    assert res['image'] == h.image(new)
    assert res['size_bytes'] > 0
    if mode == 'linked':
        assert names(rec) == ['prepare']
        assert res['backing'] == h.image(base)
        assert h.backing(new) == base
    else:
        assert names(rec) == ['copy']
        assert res['backing'] is None
        assert h.backing(new) is None
        assert seen and seen[-1] == 100.0
    assert h.driver.clone(h.image(base), 'c1', mode, StepRecorder()) == res
    h.check(new)
    h.assert_content(new, [(0xa1, 0, CHUNK), (0x00, CHUNK, CHUNK)])


# -- merge --------------------------------------------------------------------

def _two_layers(h, disk, big_snapshot):
    """base <- s1 <- live (s2): the base shows 0xa1 at 0; s1 0xb1 at 0
    and, ``big_snapshot``, 1 MiB of 0xb2 at 2 MiB; the live layer 0xc1
    at 4 MiB (1 MiB of it unless ``big_snapshot``).  :returns: (live
    disk, s1's path, the base's path, layouts of base, s1 and the live
    layer).
    """
    h.write(disk, 0xa1, 0)
    c1 = h.driver.create_snapshot(disk, 's1', StepRecorder())
    d1, root = c1['disk'], c1['snapshot']['path']
    h.write(d1, 0xb1, 0)
    if big_snapshot:
        h.write(d1, 0xb2, 2 * MiB, MiB)
    c2 = h.driver.create_snapshot(d1, 's2', StepRecorder())
    d2, s1_path = c2['disk'], c2['snapshot']['path']
    h.write(d2, 0xc1, 4 * MiB, CHUNK if big_snapshot else MiB)
    h.settle([d2])
    base = [(0xa1, 0, CHUNK), (0x00, 2 * MiB, CHUNK)]
    s1 = [(0xb1, 0, CHUNK)] + (
        [(0xb2, 2 * MiB, MiB)] if big_snapshot else [(0x00, 2 * MiB, MiB)])
    live = s1 + [(0xc1, 4 * MiB, CHUNK if big_snapshot else MiB)]
    return d2, s1_path, root, (base, s1 + [(0x00, 4 * MiB, CHUNK)], live)


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_stream_into_the_live_layer(h, online):
    """The live layer holds more than the snapshot: the snapshot is
    streamed into it (its file stays the live layer).
    """
    (disk,) = h.make_vm()
    if online:
        h.start([disk])
    live, s1, base, (shows_base, _s1, shows_live) = _two_layers(h, disk,
                                                                False)
    seen = []
    rec = StepRecorder()
    res = h.driver.merge(live, h.image(s1), h.image(base), live, rec,
                         progress=seen.append, child_is_leaf=True)
    assert res['direction'] == 'stream'
    assert res['online'] is online
    assert res['child'] == live and res['disk'] == live
    assert res['child_size_bytes'] > 0
    _assert_merge_steps(h, rec, online, 'stream')
    if online and 'pause' in names(rec):
        assert rec.pause_ms is not None
    if online:
        assert seen and seen[-1] == 100.0
        assert h.status() == 'running'
        assert h.live_chain(live) == [live['path'], base]
    assert not h.exists(s1)
    assert h.backing(live['path']) == base
    # Again: done already.
    rec2 = StepRecorder()
    again = h.driver.merge(live, h.image(s1), h.image(base), live, rec2,
                           child_is_leaf=True)
    assert dict(again, child_size_bytes=0) == dict(res, child_size_bytes=0)
    assert rec2.steps == []
    if online:
        h.check_idle(live)
    if online:
        h.write(live, 0x77, 10 * CHUNK)   # the VM keeps working
        h.stop()
        shows_live = shows_live + [(0x77, 10 * CHUNK, CHUNK)]
    h.assert_content(live['path'], shows_live)
    h.assert_content(base, shows_base)
    for path in (base, live['path']):
        h.check(path)


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_commit_into_a_big_snapshot(h, online):
    """The live layer holds less than the snapshot: it is committed into
    the snapshot's file, which becomes the live layer (drivers that
    always stream keep the child's file).
    """
    (disk,) = h.make_vm()
    if online:
        h.start([disk])
    live, s1, base, (shows_base, _s1, shows_live) = _two_layers(h, disk,
                                                                True)
    assert h.size(live['path']) < h.size(s1) or not h.has_data
    rec = StepRecorder()
    res = h.driver.merge(live, h.image(s1), h.image(base), live, rec,
                         child_is_leaf=True)
    direction = 'commit' if h.commits else 'stream'
    # the file that holds the live layer afterwards: the disk's path when
    # the driver keeps it there (issue 20)
    holder, gone = (s1, live['path']) if h.commits and not h.keeps_path \
        else (live['path'], s1)
    assert res['direction'] == direction
    assert res['online'] is online
    assert res['disk'] == dict(live, path=holder)
    assert res['child'] == res['disk']
    _assert_merge_steps(h, rec, online, direction)
    assert not h.exists(gone)
    assert h.backing(holder) == base
    assert h.defined_chain(live) in (None, holder)
    if online:
        assert h.live_chain(res['disk']) == [holder, base]
        assert h.status() == 'running'
        if h.commits:
            assert 'pause' in names(rec) and 'resume' in names(rec)
            assert rec.pause_ms is not None
        h.check_idle(res['disk'])
    again = h.driver.merge(live, h.image(s1), h.image(base), live,
                           StepRecorder(), child_is_leaf=True)
    assert again['disk'] == res['disk']
    if h.keeps_path:
        # a commit into the disk's path, found finished, leaves what a
        # stream leaves: the re-run cannot tell them apart
        assert again['direction'] in ('commit', 'stream')
    else:
        assert again['direction'] == direction
    if online:
        assert h.live_chain(res['disk']) == [holder, base]
    if online:
        h.write(res['disk'], 0x99, 3 * MiB)   # the VM writes on
        h.settle([res['disk']])
        shows_live = shows_live + [(0x99, 3 * MiB, CHUNK)]
    h.assert_content(holder, shows_live)
    h.assert_content(base, shows_base)
    h.stop()
    h.check(holder)


def test_merge_not_a_leaf_streams(h):
    """A child the conductor says is not a leaf is never committed."""
    (disk,) = h.make_vm()
    h.start([disk])
    live, s1, base, (_b, _s1, shows_live) = _two_layers(h, disk, True)
    res = h.driver.merge(live, h.image(s1), h.image(base), live,
                         StepRecorder(), child_is_leaf=False)
    assert res['direction'] == 'stream'
    assert res['disk'] == live
    assert h.live_chain(live) == [live['path'], base]
    assert not h.exists(s1)
    h.settle([live])
    h.assert_content(live['path'], shows_live)


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_root(h, online):
    """The root merged into its child: the child stands alone."""
    (disk,) = h.make_vm()
    h.write(disk, 0xa1, 0)
    created = h.driver.create_snapshot(disk, 's1', StepRecorder())
    live, base = created['disk'], created['snapshot']['path']
    h.write(live, 0xc1, 2 * CHUNK)
    if online:
        h.start([live])
    rec = StepRecorder()
    res = h.driver.merge(live, h.image(base), None, live, rec)
    assert res['direction'] == 'stream'
    assert res['online'] is online
    assert res['disk'] == live
    _assert_merge_steps(h, rec, online, 'stream')
    assert h.backing(live['path']) is None
    assert not h.exists(base)
    if online:
        assert h.live_chain(live) == [live['path']]
        h.stop()
    h.assert_content(live['path'], [(0xa1, 0, CHUNK),
                                    (0xc1, 2 * CHUNK, CHUNK)])
    h.check(live['path'])


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_intermediate(h, online):
    """base <- s1 <- s2 <- live, s1 merged with s2: one layer (s2 when
    the driver streams, s1 when it commits) holds what s2 showed, on the
    base, under the live layer.
    """
    (disk,) = h.make_vm()
    if online:
        h.start([disk])
    live, s1, base, (shows_base, _s1, shows_s2) = _two_layers(h, disk,
                                                              False)
    c3 = h.driver.create_snapshot(live, 's3', StepRecorder())
    live, s2 = c3['disk'], c3['snapshot']['path']
    h.write(live, 0xd1, 6 * MiB)
    h.settle([live])
    shows_live = shows_s2 + [(0xd1, 6 * MiB, CHUNK)]
    rec = StepRecorder()
    res = h.driver.merge(live, h.image(s1), h.image(base), h.image(s2), rec)
    direction = h.intermediate_direction[online]
    holder, gone = (s1, s2) if direction == 'commit' else (s2, s1)
    assert res.pop('child_size_bytes') > 0
    assert res == {'child': h.image(holder), 'disk': live,
                   'direction': direction, 'online': online}
    expected = h.intermediate_steps[online]
    if expected is None:
        assert 'merge' in names(rec) and 'delete' in names(rec), rec.steps
    else:
        assert names(rec) == expected, rec.steps
    if not online:
        assert rec.pause_ms is None
    assert not rec.paused
    assert not h.exists(gone)
    if online:
        assert h.status() == 'running'
        assert h.live_chain(live) == [live['path'], holder, base]
        h.check_idle(live)
    assert h.backing(live['path']) == holder
    assert h.backing(holder) == base
    rec2 = StepRecorder()
    h.driver.merge(live, h.image(s1), h.image(base), h.image(s2), rec2)
    assert rec2.steps == []
    h.stop()
    h.assert_content(holder, shows_s2)
    h.assert_content(live['path'], shows_live)
    h.assert_content(base, shows_base)
    for path in (base, holder, live['path']):
        h.check(path)


# -- crash points -------------------------------------------------------------

def test_same_task_twice(h, tmp_path):
    """A task sent twice (the conductor re-sends after a lost report) is
    answered from the agent's journal: the same report, nothing done
    again; the same work under another operation id finds it done and
    answers the same result.
    """
    (disk,) = h.make_vm()
    h.start([disk])
    conductor = driver_crash.Conductor()
    runner = driver_crash.runner(h.driver, str(tmp_path / 'journal'),
                                 conductor)
    task = {'operation_id': 'op-1', 'disk': disk, 'layer_name': 's1'}
    runner.run(context.make(), 'create_snapshot', task)
    runner.run(context.make(), 'create_snapshot', task)
    first, second = conductor.reports['op-1']
    assert first['status'] == 'succeeded', first
    assert second == first
    new, snap = _after_create(h, disk, 's1')
    assert first['result']['disk'] == dict(disk, path=new)
    assert h.live_chain(first['result']['disk']) == [new, snap]
    runner.run(context.make(), 'create_snapshot',
               dict(task, operation_id='op-2'))
    (again,) = conductor.reports['op-2']
    assert again['status'] == 'succeeded', again
    _same(again['result'], first['result'])
    assert 'pause' not in [s['name'] for s in again['steps']]
    assert h.live_chain(first['result']['disk']) == [new, snap]
    assert h.status() == 'running'


SLOTS = 8


def _points(action, steps):
    return ['%s:%s:%s' % (action, s, w) for s in steps
            for w in ('before', 'after')] + ['%s:report:before' % action]


class _Model(object):
    """What the live layer and every snapshot layer must show: one
    pattern per slot (a CHUNK at each MiB).
    """

    def __init__(self, h, disk):
        self.h = h
        self.disk = disk
        self.live = {}
        self.chain = []       # the snapshots' paths under the live layer
        self.snapshots = {}   # path -> {slot: pattern}
        self.writes = 0

    def write(self, length=CHUNK):
        slot = self.writes % SLOTS
        pattern = 0x10 + self.writes % 0xe0
        self.writes += 1
        self.h.write(self.disk, pattern, slot * MiB, length)
        self.live[slot] = pattern

    def snapshot(self, result):
        """The live layer became a snapshot (``create_snapshot``'s
        result).
        """
        self.snapshots[result['snapshot']['path']] = dict(self.live)
        self.chain.insert(0, result['snapshot']['path'])
        self.disk = result['disk']

    def merged(self, result):
        """The newest snapshot was merged into the live layer."""
        del self.snapshots[self.chain.pop(0)]
        self.disk = result['disk']

    def layout(self, shows):
        return [(shows.get(s, 0), s * MiB, CHUNK) for s in range(SLOTS)]

    def check(self):
        """Every layer shows what it must; the driver's inspection of
        them finds them whole and nothing left over (the audit).
        """
        h = self.h
        h.settle([self.disk])
        assert h.live_chain(self.disk) == [self.disk['path']] + self.chain
        found = h.driver.inspect([self.disk] + [h.image(p)
                                                for p in self.chain])
        for info in found['images']:
            assert info['exists'] and info['error'] is None, info
            assert info['check'] in ('ok', None), info
        assert found['files'] == [], found['files']
        if h.has_data:
            h.assert_content(self.disk['path'], self.layout(self.live))
            for path, shows in self.snapshots.items():
                h.assert_content(path, self.layout(shows))

    def merge_task(self, operation_id, child_is_leaf=True):
        return {'operation_id': operation_id, 'mode': 'merge',
                'disk': self.disk, 'snapshot': self.h.image(self.chain[0]),
                'parent': (self.h.image(self.chain[1])
                           if len(self.chain) > 1 else None),
                'child': self.disk, 'child_is_leaf': child_is_leaf}


def _crash_and_recover(h, journal_dir, action, task, point):
    code = driver_crash.run_killed(h, journal_dir, action, task, point)
    assert code == -9, 'agent exited %s instead of dying at %s' % (
        code, point)
    reports = driver_crash.recover(h.driver, journal_dir).reports
    (report,) = reports[task['operation_id']]
    assert report['status'] == 'succeeded', (point, report)
    assert report['steps'][0]['name'] == 'recover' or \
        point.endswith('report:before'), (point, report['steps'])
    assert h.status() == 'running', point
    return report['result']


@pytest.mark.parametrize('action', ['create_snapshot', 'delete_snapshot'])
def test_agent_killed_at_every_step(h, tmp_path, action):
    """The agent dies at every step of an online create (or of an online
    merge into the live layer: committed where the driver commits, and
    streamed for the points a commit does not reach first), before and
    after it, and between the end of the operation and its report;
    started again, its journal replay resumes the VM and finishes the
    operation, and every layer holds what it must.
    """
    journal_dir = str(tmp_path / 'journal')
    (disk,) = h.make_vm()
    h.start([disk])
    model = _Model(h, disk)
    if action == 'create_snapshot':
        points = [(p, True) for p in _points(action, h.create_crash_steps)]
    else:
        points = [(p, True) for p in _points(action, h.merge_crash_steps)]
        points += [('%s:%s:%s' % (action, s, w), False)
                   for s in h.stream_crash_steps
                   for w in ('before', 'after')]
        model.write()
        model.snapshot(h.driver.create_snapshot(disk, 'root',
                                                StepRecorder()))
    for _ in range(4):   # the snapshots hold more than the live layer
        model.write()
    for i, (point, commit) in enumerate(points):
        model.write()
        layer = 'k%d' % i
        if action == 'create_snapshot':
            task = {'operation_id': 'op-%d' % i, 'disk': model.disk,
                    'layer_name': layer}
            new = _after_create(h, model.disk, layer)[0]
            result = _crash_and_recover(h, journal_dir, action, task, point)
            assert result['disk']['path'] == new, point
            model.snapshot(result)
            model.check()
            # Keep the chain short: fold the new snapshot back (no fault).
            fold = model.merge_task('fold')
            model.merged(h.driver.merge(
                fold['disk'], fold['snapshot'], fold['parent'],
                fold['child'], StepRecorder(), child_is_leaf=True))
        else:
            model.snapshot(h.driver.create_snapshot(model.disk, layer,
                                                    StepRecorder()))
            model.write()
            h.settle([model.disk])
            # The stream points: a child said not to be a leaf.
            result = _crash_and_recover(
                h, journal_dir, action,
                model.merge_task('op-%d' % i, child_is_leaf=commit), point)
            expected = 'commit' if commit and h.commits else 'stream'
            if h.keeps_path and expected == 'commit' and \
                    result['disk'] == model.disk:
                # A commit into the disk's path found finished leaves
                # what a stream leaves: the replay cannot tell them apart.
                assert result['direction'] in ('commit', 'stream'), point
            else:
                assert result['direction'] == expected, point
            model.merged(result)
        model.check()
