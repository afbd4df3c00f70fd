"""The libvirt driver against real libvirt domains under TCG.

Each test defines a domain (``<domain type='qemu'>``, machine ``pc``,
64 MiB, two qcow2 disks on virtio, no graphics) whose images live in a
temporary image directory, and drives the driver's methods directly.  The
guest has nothing to boot and sits in its firmware, so it writes nothing:
data is written with qemu-io while the domain is shut off and read back
with ``qemu-io -r -U`` from every layer after each step.  libvirtd is
started for the run by the session fixture ``libvirt_up`` (tests/conftest.py,
livesnap_tools/libvirtd.py) when it does not run yet (root only) and
stopped at the end of the run if it started it.  No timing assertions.
"""

import os
import subprocess
import time
import uuid

import pytest

from agent import exception
from agent import images
from agent.steps import StepRecorder
from livesnap_tools import libvirtd
from livesnap_tools.testvm import read_pattern_ok

pytestmark = pytest.mark.functional

libvirt = pytest.importorskip('libvirt')

SIZE = 16 * 1024 * 1024
CHUNK = 64 * 1024
MiB = 1024 * 1024


@pytest.fixture
def imgdir(tmp_path):
    d = tmp_path / 'images'
    d.mkdir()
    return str(d)


@pytest.fixture
def driver(libvirt_up, imgdir):
    from agent.driver import libvirt as lvdriver
    drv = lvdriver.LibvirtDriver([imgdir], uri=libvirtd.URI,
                                 snapshot_pause='transaction',
                                 job_poll_interval=0.05, job_timeout=600)
    yield drv
    if drv._conn is not None:
        drv._conn.close()


class Domain(object):
    """A persistent test domain; removed (destroyed, undefined) after."""

    def __init__(self, imgdir):
        self.conn = libvirt.open(libvirtd.URI)
        self.uuid = str(uuid.uuid4())
        self.name = 'lstest-%s' % self.uuid[:8]
        self.vda = os.path.join(imgdir, 'vda-base.qcow2')
        self.vdb = os.path.join(imgdir, 'vdb-base.qcow2')
        images.create_base(self.vda, SIZE)
        images.create_base(self.vdb, SIZE)
        self.dom = self.conn.defineXML(libvirtd.domain_xml(
            self.name, self.uuid, [('vda', self.vda), ('vdb', self.vdb)]))

    def disk(self, target='vda', path=None):
        return {'driver': 'libvirt', 'domain': self.uuid, 'target': target,
                'path': path or (self.vda if target == 'vda' else self.vdb)}

    def start(self):
        self.dom.create()

    def stop(self):
        if self.dom.isActive():
            self.dom.destroy()

    def chain(self, target='vda', inactive=False):
        from agent.driver import libvirt as lvdriver
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        import xml.etree.ElementTree as ET
        root = ET.fromstring(self.dom.XMLDesc(flags))
        for d in root.findall('./devices/disk'):
            if d.find('target').get('dev') == target:
                return lvdriver._chain(d)
        raise AssertionError('no disk %s' % target)

    def cleanup(self):
        try:
            self.stop()
            self.dom.undefine()
        finally:
            self.conn.close()


@pytest.fixture
def domain(libvirt_up, imgdir):
    d = Domain(imgdir)
    yield d
    d.cleanup()


def names(rec):
    return [s['name'] for s in rec.steps]


def write(image, pattern, offset, length=CHUNK):
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0x%02x %d %d' % (pattern, offset, length),
                    image], check=True, capture_output=True)


def assert_content(image, layout):
    """``layout``: (pattern, offset, length) chunks ``image`` must show."""
    for pattern, offset, length in layout:
        assert read_pattern_ok(image, pattern, offset, length), (
            '%s does not read 0x%02x at %d' % (image, pattern, offset))


def layer(imgdir, name):
    return os.path.join(imgdir, '%s.qcow2' % name)


# A base with 4 MiB of 0xa1 at 0, and one chunk of 0xa2 at 8 MiB.
BASE = [(0xa1, 0, 4 * MiB), (0xa2, 8 * MiB, CHUNK)]


def _fill_base(domain):
    write(domain.vda, 0xa1, 0, 4 * MiB)
    write(domain.vda, 0xa2, 8 * MiB)


def _snapshot(driver, disk, name, rec=None):
    return driver.create_snapshot(disk, name, rec or StepRecorder())


def test_list_vms(driver, domain):
    domain.start()
    vms = {vm['uuid']: vm for vm in driver.list_vms()}
    vm = vms[domain.uuid]
    assert vm['name'] == domain.name
    assert vm['running'] is True
    assert [d['name'] for d in vm['disks']] == ['vda', 'vdb']
    assert vm['disks'][0]['locator'] == domain.disk('vda')
    assert vm['disks'][1]['locator'] == domain.disk('vdb')
    assert driver.is_online(domain.disk())
    domain.stop()
    vm = {v['uuid']: v for v in driver.list_vms()}[domain.uuid]
    assert vm['running'] is False
    assert not driver.is_online(domain.disk())


def test_create_offline(driver, domain, imgdir):
    _fill_base(domain)
    rec = StepRecorder()
    res = _snapshot(driver, domain.disk(), 's1', rec)
    new = layer(imgdir, 's1')
    assert res['online'] is False
    assert res['snapshot'] == {'driver': 'libvirt', 'path': domain.vda}
    assert res['disk'] == domain.disk(path=new)
    assert names(rec) == ['prepare', 'snapshot']
    assert domain.chain(inactive=True)[0] == new
    assert images.backing_file(new) == domain.vda
    # Again: nothing more to do, the same answer.
    assert _snapshot(driver, domain.disk(), 's1') == res
    write(new, 0xb1, 0, CHUNK)
    assert_content(domain.vda, BASE)
    assert_content(new, [(0xb1, 0, CHUNK), (0xa1, CHUNK, 4 * MiB - CHUNK),
                         (0xa2, 8 * MiB, CHUNK)])
    # The domain boots on the new layer.
    domain.start()
    assert domain.chain() == [new, domain.vda]
    assert domain.chain('vdb') == [domain.vdb]


@pytest.mark.parametrize('mode', ['transaction', 'suspend'])
def test_create_online(driver, domain, imgdir, mode):
    driver.snapshot_pause = mode
    _fill_base(domain)
    domain.start()
    rec = StepRecorder()
    res = _snapshot(driver, domain.disk(), 's1', rec)
    new = layer(imgdir, 's1')
    assert res['online'] is True
    assert res['disk'] == domain.disk(path=new)
    assert res['snapshot']['path'] == domain.vda
    assert names(rec) == ['prepare', 'pause', 'snapshot', 'resume']
    assert rec.pause_ms is not None and rec.agent_pause_ms is not None
    if mode == 'suspend':
        # QEMU's own STOP/RESUME timestamps reached the driver.
        assert 'qemu_pause_ms' in rec.steps[-1]['detail']
    # Listening to QEMU's events does not mark the domain tainted.
    log = '/var/log/libvirt/qemu/%s.log' % domain.name
    if os.path.exists(log):
        with open(log) as f:
            assert 'tainted' not in f.read()
    assert all(s['status'] == 'done' for s in rec.steps)
    state, _ = domain.dom.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    assert domain.chain() == [new, domain.vda]
    # The other disk was left alone; the definition follows the switch.
    assert domain.chain('vdb') == [domain.vdb]
    assert domain.chain(inactive=True)[0] == new
    # A re-run (a crash after the switch) finds it done.
    rec2 = StepRecorder()
    assert _snapshot(driver, domain.disk(), 's1', rec2) == res
    assert names(rec2) == []
    # A second layer on the first.
    res2 = _snapshot(driver, res['disk'], 's2')
    new2 = layer(imgdir, 's2')
    assert domain.chain() == [new2, new, domain.vda]
    assert res2['snapshot']['path'] == new
    for img in (domain.vda, new, new2):
        assert_content(img, BASE)
    domain.stop()
    assert domain.chain(inactive=True)[0] == new2


def test_create_online_paused_domain_stays_paused(driver, domain, imgdir):
    driver.snapshot_pause = 'suspend'
    domain.start()
    domain.dom.suspend()
    rec = StepRecorder()
    _snapshot(driver, domain.disk(), 's1', rec)
    assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert rec.steps[1]['detail']['was_running'] is False
    assert driver.resume(domain.disk()) is True
    assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert driver.resume(domain.disk()) is False


def test_create_refuses_wrong_live_layer(driver, domain, imgdir):
    domain.start()
    _snapshot(driver, domain.disk(), 's1')
    with pytest.raises(exception.InvalidRequest):
        _snapshot(driver, domain.disk(), 's2')   # the old live layer
    assert not os.path.exists(layer(imgdir, 's2'))


def _two_layers(driver, domain, imgdir, big_snapshot):
    """base (BASE) <- s1 <- live (s2), s1 shows 0xb1 at 4 MiB (2 MiB of
    it when ``big_snapshot``), live shows 0xc1 at 12 MiB, written offline;
    the domain then runs.  Returns (disk, s1, live)."""
    _fill_base(domain)
    d1 = _snapshot(driver, domain.disk(), 's1')['disk']
    write(d1['path'], 0xb1, 4 * MiB, 2 * MiB if big_snapshot else CHUNK)
    d2 = _snapshot(driver, d1, 's2')['disk']
    write(d2['path'], 0xc1, 12 * MiB, CHUNK if big_snapshot else 2 * MiB)
    return d2, d1['path'], d2['path']


def _shows(big_snapshot):
    return BASE + [(0xb1, 4 * MiB, 2 * MiB if big_snapshot else CHUNK),
                   (0xc1, 12 * MiB, CHUNK if big_snapshot else 2 * MiB)]


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_stream(driver, domain, imgdir, online):
    disk, s1, live = _two_layers(driver, domain, imgdir, big_snapshot=False)
    if online:
        domain.start()
    seen = []
    rec = StepRecorder()
    res = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                       {'driver': 'libvirt', 'path': domain.vda}, disk, rec,
                       progress=seen.append, child_is_leaf=True)
    assert res['direction'] == 'stream'
    assert res['online'] is online
    assert res['child'] == disk and res['disk'] == disk
    assert not os.path.exists(s1)
    assert images.backing_file(live) == domain.vda
    assert 'merge' in names(rec) and 'delete' in names(rec)
    if online:
        assert domain.chain() == [live, domain.vda]
        assert seen and seen[-1] == 100.0
    assert_content(live, _shows(False))
    assert_content(domain.vda, BASE)
    # Again: done already.
    again = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                         {'driver': 'libvirt', 'path': domain.vda}, disk,
                         StepRecorder(), child_is_leaf=True)
    assert again == res


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_stream_whole_chain(driver, domain, imgdir, online):
    """The root merged into its child: the child stands alone."""
    _fill_base(domain)
    disk = _snapshot(driver, domain.disk(), 's1')['disk']
    write(disk['path'], 0xc1, 12 * MiB)
    if online:
        domain.start()
    res = driver.merge(disk, {'driver': 'libvirt', 'path': domain.vda}, None,
                       disk, StepRecorder())
    assert res['direction'] == 'stream'
    assert images.backing_file(disk['path']) is None
    assert not os.path.exists(domain.vda)
    assert_content(disk['path'], BASE + [(0xc1, 12 * MiB, CHUNK)])
    if online:
        assert domain.chain() == [disk['path']]


@pytest.mark.parametrize('online', [True, False], ids=['online', 'offline'])
def test_merge_commit_live_layer(driver, domain, imgdir, online):
    disk, s1, live = _two_layers(driver, domain, imgdir, big_snapshot=True)
    if online:
        domain.start()
    rec = StepRecorder()
    res = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                       {'driver': 'libvirt', 'path': domain.vda}, disk, rec,
                       child_is_leaf=True)
    assert res['direction'] == 'commit'
    assert res['online'] is online
    assert res['disk'] == dict(disk, path=s1)
    assert res['child'] == res['disk']
    assert not os.path.exists(live)
    assert images.backing_file(s1) == domain.vda
    assert domain.chain(inactive=True)[0] == s1
    if online:
        assert domain.chain() == [s1, domain.vda]
        assert 'pause' in names(rec) and 'resume' in names(rec)
        assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert_content(s1, _shows(True))
    assert_content(domain.vda, BASE)
    again = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                         {'driver': 'libvirt', 'path': domain.vda}, disk,
                         StepRecorder(), child_is_leaf=True)
    assert again['disk'] == res['disk'] and again['direction'] == 'commit'


def test_merge_intermediate_online_commits(driver, domain, imgdir):
    """base <- s1 <- s2 <- live: s1 merged with s2 while running.  libvirt
    streams only into the live layer, so s2 is committed into s1."""
    disk, s1, s2 = _two_layers(driver, domain, imgdir, big_snapshot=False)
    disk = _snapshot(driver, disk, 's3')['disk']
    domain.start()
    s1_loc = {'driver': 'libvirt', 'path': s1}
    res = driver.merge(disk, s1_loc,
                       {'driver': 'libvirt', 'path': domain.vda},
                       {'driver': 'libvirt', 'path': s2}, StepRecorder())
    assert res.pop('child_size_bytes') > 0
    assert res == {'child': s1_loc, 'disk': disk, 'direction': 'commit',
                   'online': True}
    assert not os.path.exists(s2)
    assert domain.chain() == [disk['path'], s1, domain.vda]
    assert images.backing_file(disk['path']) == s1
    assert_content(s1, _shows(False))
    assert_content(disk['path'], _shows(False))


def test_delete_and_revert(driver, domain, imgdir):
    _fill_base(domain)
    d1 = _snapshot(driver, domain.disk(), 's1')['disk']
    write(d1['path'], 0xb1, 0)
    domain.start()
    base = {'driver': 'libvirt', 'path': domain.vda}
    # Revert is refused while the domain runs; nothing is made.
    with pytest.raises(exception.ServerRunning):
        driver.revert(d1, base, 'r1', StepRecorder())
    assert not os.path.exists(layer(imgdir, 'r1'))
    # A layer the running domain reads is not deleted.
    with pytest.raises(exception.ImageInUse):
        driver.delete_image(base, StepRecorder())
    domain.stop()
    rec = StepRecorder()
    res = driver.revert(d1, base, 'r1', rec)
    r1 = layer(imgdir, 'r1')
    assert res == {'disk': dict(d1, path=r1), 'online': False}
    assert images.backing_file(r1) == domain.vda
    assert domain.chain(inactive=True)[0] == r1
    assert_content(r1, BASE)
    # The old live layer is the caller's to delete.
    assert driver.delete_image({'driver': 'libvirt', 'path': d1['path']},
                               StepRecorder()) == {}
    assert not os.path.exists(d1['path'])
    assert driver.delete_image({'driver': 'libvirt', 'path': d1['path']},
                               StepRecorder()) == {}
    domain.start()
    assert domain.chain() == [r1, domain.vda]


def test_paths_outside_image_dirs_refused(driver, domain, tmp_path):
    with pytest.raises(exception.PathNotAllowed):
        driver.delete_image({'driver': 'libvirt',
                             'path': str(tmp_path / 'x.qcow2')},
                            StepRecorder())
    disk = domain.disk(path=str(tmp_path / 'elsewhere.qcow2'))
    with pytest.raises(exception.PathNotAllowed):
        driver.create_snapshot(disk, 's1', StepRecorder())


def test_inspect_and_remove(driver, domain, imgdir):
    d1 = _snapshot(driver, domain.disk(), 's1')['disk']
    stray = os.path.join(imgdir, 'stray.qcow2')
    images.create_base(stray, SIZE)
    out = driver.inspect([d1, {'driver': 'libvirt', 'path': domain.vda},
                          {'driver': 'libvirt', 'path': '/etc/passwd'}])
    top, base, bad = out['images']
    assert top['exists'] and top['check'] == 'ok'
    assert top['backing'] == {'driver': 'libvirt', 'path': domain.vda}
    assert base['backing'] is None
    assert bad['exists'] is False and bad['error']
    # The files no locator names, as the QEMU driver lists them.
    assert sorted(out['files'], key=lambda f: f['path']) == [
        {'path': stray, 'locator': None},
        {'path': domain.vdb, 'locator': None}]
    assert driver.remove(stray) == {'removed': True, 'error': ''}
    assert not os.path.exists(stray)
    domain.start()
    refused = driver.remove(d1['path'])
    assert refused['removed'] is False and refused['error']


def test_merge_cancelled_leaves_chain(driver, domain, imgdir):
    """A stream slowed to a crawl and cancelled: the job is aborted and
    every layer is as it was."""
    disk, s1, live = _two_layers(driver, domain, imgdir, big_snapshot=True)
    domain.start()
    driver.merge_speed = 64 * 1024
    with pytest.raises(exception.Cancelled):
        driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                     {'driver': 'libvirt', 'path': domain.vda}, disk,
                     StepRecorder(), cancelled=lambda: True)
    assert domain.dom.blockJobInfo('vda', 0) == {}
    assert domain.chain() == [live, s1, domain.vda]
    assert os.path.exists(s1)
    assert_content(s1, BASE + [(0xb1, 4 * MiB, 2 * MiB)])


def test_merge_finds_running_stream(driver, domain, imgdir):
    """An agent that died after starting the stream: the re-sent merge
    waits for the job it finds and finishes."""
    disk, s1, live = _two_layers(driver, domain, imgdir, big_snapshot=False)
    domain.start()
    domain.dom.blockRebase('vda', domain.vda, 64 * 1024,
                           libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES)
    domain.dom.blockJobSetSpeed('vda', 0, 0)
    res = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                       {'driver': 'libvirt', 'path': domain.vda}, disk,
                       StepRecorder())
    assert res['direction'] == 'stream'
    assert domain.chain() == [live, domain.vda]
    assert not os.path.exists(s1)
    assert_content(live, _shows(False))


def test_merge_after_pivot_keeps_it(driver, domain, imgdir):
    """An agent that died after the pivot of an active commit: the re-sent
    merge keeps the pivot and only deletes the old live layer."""
    disk, s1, live = _two_layers(driver, domain, imgdir, big_snapshot=True)
    domain.start()
    domain.dom.blockCommit('vda', s1, live, 0,
                           libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
    for _ in range(2000):
        info = domain.dom.blockJobInfo('vda', 0)
        if info and info['cur'] == info['end'] and 'ready=\'yes\'' in \
                domain.dom.XMLDesc(0):
            break
        time.sleep(0.05)
    domain.dom.blockJobAbort('vda', libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    assert domain.chain() == [s1, domain.vda]
    res = driver.merge(disk, {'driver': 'libvirt', 'path': s1},
                       {'driver': 'libvirt', 'path': domain.vda}, disk,
                       StepRecorder(), child_is_leaf=True)
    assert res['direction'] == 'commit'
    assert res['disk'] == dict(disk, path=s1)
    assert not os.path.exists(live)
    assert domain.chain(inactive=True)[0] == s1
    assert_content(s1, _shows(True))


def test_merge_other_branch_while_running(driver, domain, imgdir):
    """Layers the running domain does not use (the branch left by a
    revert) are merged with qemu-img while it runs."""
    disk, s1, old_live = _two_layers(driver, domain, imgdir,
                                     big_snapshot=False)
    base = {'driver': 'libvirt', 'path': domain.vda}
    r1 = driver.revert(disk, base, 'r1', StepRecorder())['disk']
    domain.start()
    res = driver.merge(r1, {'driver': 'libvirt', 'path': s1}, base,
                       {'driver': 'libvirt', 'path': old_live},
                       StepRecorder(), child_is_leaf=False)
    assert res['online'] is False and res['direction'] == 'stream'
    assert res['disk'] == r1
    assert not os.path.exists(s1)
    assert images.backing_file(old_live) == domain.vda
    assert_content(old_live, _shows(False))
    assert domain.chain() == [r1['path'], domain.vda]


def test_create_group_online_one_call(driver, domain, imgdir):
    """Two disks, one group: one snapshotCreateXML switches both under
    one pause (``suspend``, so the pause is QEMU's STOP to RESUME)."""
    driver.snapshot_pause = 'suspend'
    _fill_base(domain)
    write(domain.vdb, 0xc1, 0)
    domain.start()
    rec = StepRecorder()
    res = driver.create_snapshots([domain.disk('vda'), domain.disk('vdb')],
                                  ['g1', 'g2'], rec)
    g1, g2 = layer(imgdir, 'g1'), layer(imgdir, 'g2')
    assert res['online'] is True
    assert [s['disk'] for s in res['snapshots']] == [
        domain.disk('vda', g1), domain.disk('vdb', g2)]
    assert names(rec) == ['prepare', 'prepare', 'pause', 'snapshot',
                          'resume']
    assert all(s['status'] == 'done' for s in rec.steps)
    assert domain.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert domain.chain('vda') == [g1, domain.vda]
    assert domain.chain('vdb') == [g2, domain.vdb]
    assert domain.chain('vda', inactive=True)[0] == g1
    assert domain.chain('vdb', inactive=True)[0] == g2
    # Run again: found done.
    assert driver.create_snapshots(
        [domain.disk('vda'), domain.disk('vdb')], ['g1', 'g2'],
        StepRecorder()) == res
    domain.stop()
    assert_content(g1, BASE)
    assert_content(g2, [(0xc1, 0, CHUNK)])
