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
What every driver must do is the contract suite's
(tests/functional/test_driver_contract.py, where libvirt runs with
``snapshot_pause = suspend``); here are the libvirt driver's own cases.
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
    from agent.driver.libvirt import driver as lvdriver
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
        from agent.driver.libvirt import guest as lvguest
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        import xml.etree.ElementTree as ET
        root = ET.fromstring(self.dom.XMLDesc(flags))
        for d in root.findall('./devices/disk'):
            if d.find('target').get('dev') == target:
                return lvguest.chain(d)
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


# ``suspend`` is the contract suite's libvirt harness
# (tests/functional/test_driver_contract.py).
@pytest.mark.parametrize('mode', ['transaction'])
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


def test_create_refuses_wrong_live_layer(driver, domain, imgdir):
    domain.start()
    _snapshot(driver, domain.disk(), 's1')
    with pytest.raises(exception.InvalidRequest):
        _snapshot(driver, domain.disk(), 's2')   # the old live layer
    assert not os.path.exists(layer(imgdir, 's2'))


def _two_layers(driver, domain, imgdir, big_snapshot):
    """base (BASE) <- s1 <- live (s2), s1 shows 0xb1 at 4 MiB (2 MiB of
    it when ``big_snapshot``), live shows 0xc1 at 12 MiB, written offline;
    the domain then runs.  Returns (disk, s1, live).
    """
    _fill_base(domain)
    d1 = _snapshot(driver, domain.disk(), 's1')['disk']
    write(d1['path'], 0xb1, 4 * MiB, 2 * MiB if big_snapshot else CHUNK)
    d2 = _snapshot(driver, d1, 's2')['disk']
    write(d2['path'], 0xc1, 12 * MiB, CHUNK if big_snapshot else 2 * MiB)
    return d2, d1['path'], d2['path']


def _shows(big_snapshot):
    return BASE + [(0xb1, 4 * MiB, 2 * MiB if big_snapshot else CHUNK),
                   (0xc1, 12 * MiB, CHUNK if big_snapshot else 2 * MiB)]


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
    every layer is as it was.
    """
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
    waits for the job it finds and finishes.
    """
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
    merge keeps the pivot and only deletes the old live layer.
    """
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
    revert) are merged with qemu-img while it runs.
    """
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
