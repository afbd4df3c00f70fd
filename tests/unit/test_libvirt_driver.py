"""The libvirt driver's pause and its safety net, with a mocked libvirt.

The real domains are in tests/functional/test_libvirt_driver.py; here the
failures libvirt rarely gives on demand: a snapshot call that fails, one
that fails after switching anyway, a resume that keeps failing.  Image work
uses real qemu-img in a temporary image directory.
"""

import os
import time
import types
from unittest import mock
import xml.etree.ElementTree as ET

import pytest

from agent.driver.libvirt import driver as lvdriver
from agent.driver.libvirt import guest as lvguest
from agent.driver.libvirt import pause as lvpause
from agent import exception
from agent import images
from agent import journal as journal_mod
from agent.steps import StepRecorder
from agent import task_runner
from livesnap_tools import fixtures

UUID = '7b0e2a0c-8d8e-4c39-9d54-0d5e6f7a8b9c'


class FakeError(Exception):
    def get_error_code(self):
        return 1


FAKE = types.SimpleNamespace(
    libvirtError=FakeError,
    VIR_DOMAIN_XML_INACTIVE=2,
    VIR_DOMAIN_RUNNING=1, VIR_DOMAIN_PAUSED=3,
    VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY=16,
    VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT=32,
    VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA=4,
    VIR_ERR_BLOCK_COPY_ACTIVE=-1, VIR_ERR_NO_DOMAIN=42,
    VIR_DOMAIN_BLOCK_JOB_TYPE_PULL=1, VIR_DOMAIN_BLOCK_JOB_TYPE_COPY=2,
    VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT=3,
    VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT=4)

#: the flags of every disk-only snapshot the driver takes
FLAGS = (FAKE.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
         | FAKE.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
         | FAKE.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
SNAP = ('snapshot', FLAGS)


class FakeDomain(object):
    """A running domain with disk ``vda`` on ``chain`` (live layer
    first) and more disks by target in ``chains``.
    """

    def __init__(self, chain):
        self.chains = {'vda': list(chain)}
        self.jobs = {}
        self.active = 1
        self.state_value = FAKE.VIR_DOMAIN_RUNNING
        self.calls = []
        self.snapshot_effect = None
        self.resume_failures = 0

    @property
    def chain(self):
        return self.chains['vda']

    def name(self):
        return 'dom1'

    def UUIDString(self):
        return UUID

    def isActive(self):
        return self.active

    def isPersistent(self):
        return 0

    def state(self):
        return self.state_value, 0

    def XMLDesc(self, flags=0):
        disks = ''
        for target, chain in sorted(self.chains.items()):
            inner = ''
            for path in reversed(chain[1:]):
                inner = ("<backingStore type='file'><source file='%s'/>%s"
                         "</backingStore>" % (path, inner))
            disks += ("<disk type='file' device='disk'><source file='%s'/>"
                      "%s<target dev='%s'/></disk>"
                      % (chain[0], inner, target))
        return "<domain><devices>%s</devices></domain>" % disks

    def blockJobInfo(self, target, flags):
        return self.jobs.get(target, {})

    def suspend(self):
        self.calls.append('suspend')
        self.state_value = FAKE.VIR_DOMAIN_PAUSED

    def resume(self):
        self.calls.append('resume')
        if self.resume_failures:
            self.resume_failures -= 1
            raise FakeError('resume refused')
        self.state_value = FAKE.VIR_DOMAIN_RUNNING

    def snapshotCreateXML(self, xml, flags):
        self.calls.append(('snapshot', flags))
        if self.snapshot_effect is not None:
            self.snapshot_effect(self, xml)


def switch_all(dom, xml):
    """What libvirt does with a disk-only snapshot: every disk marked
    external runs on its file.
    """
    for disk in ET.fromstring(xml).findall('./disks/disk'):
        if disk.get('snapshot') == 'external':
            dom.chains[disk.get('name')].insert(
                0, disk.find('source').get('file'))


@pytest.fixture
def imgdir(tmp_path):
    d = tmp_path / 'images'
    d.mkdir()
    return str(d)


@pytest.fixture
def setup(imgdir):
    base = os.path.join(imgdir, 'base.qcow2')
    images.create_base(base, 1024 * 1024)
    dom = FakeDomain([base])
    conn = mock.Mock()
    conn.lookupByUUIDString.return_value = dom
    with mock.patch.object(lvdriver, 'libvirt', FAKE), \
            mock.patch.object(lvguest, 'libvirt', FAKE), \
            mock.patch.object(lvpause, 'libvirt', FAKE):
        drv = lvdriver.LibvirtDriver([imgdir], uri='test:///x',
                                     snapshot_pause='suspend',
                                     job_poll_interval=0.01,
                                     resume_retries=3, pause_deadline=5.0)
        drv._conn = conn
        conn.isAlive.return_value = 1
        disk = lvdriver.disk_locator(UUID, 'vda', base)
        yield drv, dom, disk, imgdir


def test_bad_pause_mode(imgdir):
    with pytest.raises(exception.InvalidRequest):
        lvdriver.LibvirtDriver([imgdir], uri='test:///x',
                               snapshot_pause='stop', job_poll_interval=1)


def test_layer_locator_is_pure_and_confined(setup):
    drv, _dom, disk, imgdir = setup
    loc = drv.layer_locator(disk, 'l1')
    assert loc == {'driver': 'libvirt',
                   'path': os.path.join(imgdir, 'l1.qcow2')}
    assert drv.layer_locator(disk, 'l1') == loc
    for bad in ('a/b', '', '.hidden', None):
        with pytest.raises(exception.InvalidRequest):
            drv.layer_locator(disk, bad)


@pytest.mark.parametrize('mode', ['suspend', 'transaction'])
def test_create_switches_and_resumes(setup, mode):
    drv, dom, disk, imgdir = setup
    drv.snapshot_pause = mode
    new = os.path.join(imgdir, 's1.qcow2')

    def switch(d, xml):
        assert 'snapshot="external"' in xml and new in xml
        d.chain.insert(0, new)
    dom.snapshot_effect = switch
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec)
    assert res['disk'] == dict(disk, path=new) and res['online'] is True
    assert [s['name'] for s in rec.steps] == [
        'prepare', 'pause', 'snapshot', 'resume']
    if mode == 'suspend':
        assert dom.calls == ['suspend', SNAP, 'resume']
    else:
        assert dom.calls == [SNAP]
    assert not rec.paused and rec.pause_ms is not None


def test_failed_snapshot_resumes_and_drops_overlay(setup):
    drv, dom, disk, imgdir = setup

    def fail(d, xml):
        raise FakeError('no')
    dom.snapshot_effect = fail
    rec = StepRecorder()
    with pytest.raises(lvguest.LibvirtError):
        drv.create_snapshot(disk, 's1', rec)
    assert dom.calls == ['suspend', SNAP, 'resume']
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    assert not os.path.exists(os.path.join(imgdir, 's1.qcow2'))
    assert [(s['name'], s['status']) for s in rec.steps] == [
        ('prepare', 'done'), ('pause', 'done'), ('snapshot', 'failed'),
        ('resume', 'done')]


def test_switch_that_happened_is_kept(setup):
    drv, dom, disk, imgdir = setup
    drv.snapshot_pause = 'transaction'
    new = os.path.join(imgdir, 's1.qcow2')

    def switch_then_fail(d, xml):
        d.chain.insert(0, new)
        raise FakeError('lost the answer')
    dom.snapshot_effect = switch_then_fail
    res = drv.create_snapshot(disk, 's1', StepRecorder())
    assert res['disk']['path'] == new
    assert os.path.exists(new)
    # And a re-run finds it done without calling libvirt again.
    dom.calls.clear()
    assert drv.create_snapshot(disk, 's1', StepRecorder()) == res
    assert dom.calls == []


def test_resume_retries_then_fails(setup):
    drv, dom, disk, imgdir = setup
    dom.snapshot_effect = lambda d, xml: d.chain.insert(
        0, os.path.join(imgdir, 's1.qcow2'))
    dom.resume_failures = 10
    rec = StepRecorder()
    with pytest.raises(exception.ResumeFailed):
        drv.create_snapshot(disk, 's1', rec)
    assert dom.calls.count('resume') == 3
    assert rec.steps[-1]['name'] == 'resume'
    assert rec.steps[-1]['status'] == 'failed'
    assert rec.paused  # left marked for the journal's resume


def test_resume_retried_succeeds(setup):
    drv, dom, disk, imgdir = setup
    dom.snapshot_effect = lambda d, xml: d.chain.insert(
        0, os.path.join(imgdir, 's1.qcow2'))
    dom.resume_failures = 2
    drv.create_snapshot(disk, 's1', StepRecorder())
    assert dom.calls.count('resume') == 3
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING


def test_resume(setup):
    drv, dom, disk, _ = setup
    assert drv.resume(disk) is False
    dom.state_value = FAKE.VIR_DOMAIN_PAUSED
    assert drv.resume(disk) is True
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING


def test_create_refuses_a_layer_not_live(setup):
    drv, dom, disk, imgdir = setup
    dom.chain.insert(0, os.path.join(imgdir, 'other.qcow2'))
    with pytest.raises(exception.InvalidRequest):
        drv.create_snapshot(disk, 's1', StepRecorder())
    assert dom.calls == []


def _wait_for(what, timeout=10.0):
    end = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < end, 'timed out'
        time.sleep(0.005)


def test_watchdog_resumes_a_pause_past_the_deadline(setup):
    """snapshotCreateXML hangs with the domain suspended: the watchdog
    resumes it at the deadline, the switch that happened is kept and the
    resume step says who resumed.
    """
    drv, dom, disk, imgdir = setup
    drv.pause_deadline = 0.05
    new = os.path.join(imgdir, 's1.qcow2')

    def hang(d, xml):
        _wait_for(lambda: d.state_value == FAKE.VIR_DOMAIN_RUNNING)
        d.chain.insert(0, new)
    dom.snapshot_effect = hang
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec)
    assert res['disk']['path'] == new
    # The watchdog's resume, while snapshotCreateXML hangs; the finally
    # finds the domain running.
    assert dom.calls == ['suspend', SNAP, 'resume']
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    resume = rec.steps[-1]
    assert resume['name'] == 'resume' and resume['status'] == 'done'
    assert resume['detail']['by'] == 'watchdog'
    assert resume['detail']['deadline_ms'] == 50.0
    assert not rec.paused and rec.pause_ms is not None


def test_watchdog_waits_for_a_suspend_slower_than_the_deadline(setup):
    """The deadline passes before the suspend took effect: the watchdog
    keeps looking and resumes the domain once it is paused (it does not
    spend its one chance on a running domain).
    """
    drv, dom, disk, imgdir = setup
    drv.pause_deadline = 0.02
    new = os.path.join(imgdir, 's1.qcow2')

    def late_suspend():
        time.sleep(0.1)
        dom.calls.append('suspend')
        dom.state_value = FAKE.VIR_DOMAIN_PAUSED
    dom.suspend = late_suspend

    def hang(d, xml):
        _wait_for(lambda: d.state_value == FAKE.VIR_DOMAIN_RUNNING)
        d.chain.insert(0, new)
    dom.snapshot_effect = hang
    rec = StepRecorder()
    drv.create_snapshot(disk, 's1', rec)
    assert dom.calls == ['suspend', SNAP, 'resume']
    assert rec.steps[-1]['detail']['by'] == 'watchdog'


def test_watchdog_tries_again_after_a_failed_resume(setup):
    """A resume refused (libvirt's job wait timed out) is tried again,
    over a fresh lookup, until the domain runs.
    """
    drv, dom, disk, imgdir = setup
    drv.pause_deadline = 0.02
    dom.resume_failures = 2
    new = os.path.join(imgdir, 's1.qcow2')

    def hang(d, xml):
        _wait_for(lambda: d.state_value == FAKE.VIR_DOMAIN_RUNNING)
        d.chain.insert(0, new)
    dom.snapshot_effect = hang
    rec = StepRecorder()
    drv.create_snapshot(disk, 's1', rec)
    assert dom.calls == ['suspend', SNAP, 'resume', 'resume', 'resume']
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    assert rec.steps[-1]['detail']['by'] == 'watchdog'


def test_watchdog_past_the_deadline_without_the_switch_fails(setup):
    drv, dom, disk, imgdir = setup
    drv.pause_deadline = 0.05

    def hang(d, xml):
        _wait_for(lambda: d.state_value == FAKE.VIR_DOMAIN_RUNNING)
    dom.snapshot_effect = hang
    rec = StepRecorder()
    with pytest.raises(exception.PauseDeadlineExceeded):
        drv.create_snapshot(disk, 's1', rec)
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    assert not os.path.exists(os.path.join(imgdir, 's1.qcow2'))
    assert rec.steps[-1]['detail']['by'] == 'watchdog'


def test_watchdog_stays_quiet_within_the_deadline(setup):
    drv, dom, disk, imgdir = setup
    drv.pause_deadline = 0.5
    dom.snapshot_effect = lambda d, xml: d.chain.insert(
        0, os.path.join(imgdir, 's1.qcow2'))
    rec = StepRecorder()
    drv.create_snapshot(disk, 's1', rec)
    assert dom.calls == ['suspend', SNAP, 'resume']
    assert 'by' not in rec.steps[-1]['detail']
    # Disarmed: nothing resumes the domain later.
    dom.state_value = FAKE.VIR_DOMAIN_PAUSED
    time.sleep(0.6)
    assert dom.calls == ['suspend', SNAP, 'resume']


def test_watchdog_bounds_the_flush_pause(setup):
    """The suspend before a merge's delete (the flush) is bounded too: a
    suspend call that returns late finds the domain resumed by the
    watchdog, and the merge goes on.
    """
    drv, dom, disk, _imgdir = setup
    drv.pause_deadline = 0.05

    def slow_suspend():
        dom.calls.append('suspend')
        dom.state_value = FAKE.VIR_DOMAIN_PAUSED
        _wait_for(lambda: dom.state_value == FAKE.VIR_DOMAIN_RUNNING)
    dom.suspend = slow_suspend
    rec = StepRecorder()
    drv._flush(lvguest.Guest(dom), rec)
    assert dom.calls == ['suspend', 'resume']
    assert [s['name'] for s in rec.steps] == ['pause', 'resume']
    assert rec.steps[-1]['detail']['by'] == 'watchdog'
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING


# -- refusals, as the QEMU driver refuses ------------------------------------
def _files(root):
    state = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            state[path] = os.path.getsize(path)
    return state


@pytest.fixture
def hostile(setup, tmp_path):
    """A runner over the fake-libvirt driver, and a victim image outside
    the image directory.
    """
    drv, dom, disk, imgdir = setup
    outside = tmp_path / 'outside'
    outside.mkdir()
    victim = str(outside / 'victim.qcow2')
    images.create_base(victim, 1024 * 1024)
    runner = task_runner.TaskRunner(
        drv, journal_mod.Journal(str(tmp_path / 'journal')),
        fixtures.FakeConductor(), 'hv1')
    return {'drv': drv, 'dom': dom, 'disk': disk, 'images': imgdir,
            'victim': victim, 'runner': runner, 'tmp': str(tmp_path)}


def _refused(h, action, task, code, *words):
    """Run ``task``: one failed report with ``code`` naming ``words``,
    no file changed and libvirt never asked to change anything.
    """
    before = _files(h['tmp'])
    h['runner'].run({}, action, dict(task, operation_id='op-1'))
    after = {p: s for p, s in _files(h['tmp']).items()
             if '/journal/' not in p}
    assert after == {p: s for p, s in before.items()
                     if '/journal/' not in p}
    (_op, report), = h['runner'].conductor_api.reports
    assert report['status'] == 'failed', report
    assert report['error_code'] == code, report
    for word in words:
        assert word in report['error'], report['error']
    assert h['dom'].calls == []


def _loc(path, target=None):
    if target is None:
        return lvdriver.image_locator(path)
    return lvdriver.disk_locator(UUID, target, path)


def test_refuses_a_disk_elsewhere(hostile):
    _refused(hostile, 'create_snapshot',
             {'disk': _loc(hostile['victim'], 'vda'), 'layer_name': 'n'},
             'path_not_allowed', 'outside')


def test_refuses_a_symlink_escape(hostile):
    link = os.path.join(hostile['images'], 'innocent.qcow2')
    os.symlink(hostile['victim'], link)
    _refused(hostile, 'create_snapshot',
             {'disk': _loc(link, 'vda'), 'layer_name': 'n'},
             'path_not_allowed', hostile['victim'])


@pytest.mark.parametrize('field', ['snapshot', 'child', 'parent'])
def test_refuses_a_merge_elsewhere(hostile, field):
    task = {'mode': 'merge', 'disk': hostile['disk'],
            'snapshot': _loc(os.path.join(hostile['images'], 's.qcow2')),
            'parent': None, 'child': hostile['disk']}
    task[field] = _loc(hostile['victim'])
    _refused(hostile, 'delete_snapshot', task, 'path_not_allowed', 'outside')


def test_refuses_a_physical_delete_elsewhere(hostile):
    _refused(hostile, 'delete_snapshot',
             {'mode': 'physical', 'disk': hostile['disk'],
              'snapshot': _loc(hostile['victim'])},
             'path_not_allowed', 'outside')


def test_refuses_a_revert_discarding_elsewhere(hostile):
    _refused(hostile, 'revert_disk',
             {'disk': hostile['disk'], 'snapshot': _loc(
                 hostile['disk']['path']),
              'layer_name': 'r', 'discard': _loc(hostile['victim'])},
             'path_not_allowed', 'outside')


def test_refuses_a_group_with_a_disk_elsewhere(hostile):
    _refused(hostile, 'create_snapshots',
             {'disk': hostile['disk'],
              'disks': [hostile['disk'], _loc(hostile['victim'], 'vdb')],
              'layer_names': ['n1', 'n2']},
             'path_not_allowed', 'outside')


def test_refuses_a_disk_busy_with_a_block_job(setup):
    """A block job that is not this operation's (an operator's copy, say)
    holds the disk: a create and a merge are refused before any I/O.
    """
    drv, dom, disk, imgdir = setup
    dom.jobs['vda'] = {'type': FAKE.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY,
                       'cur': 1, 'end': 10}
    with pytest.raises(exception.ImageInUse, match='busy with a block job'):
        drv.create_snapshot(disk, 's1', StepRecorder())
    assert not os.path.exists(os.path.join(imgdir, 's1.qcow2'))
    top = os.path.join(imgdir, 'top.qcow2')
    images.create_overlay(top, disk['path'])
    dom.chain.insert(0, top)
    live = dict(disk, path=top)
    rec = StepRecorder()
    with pytest.raises(exception.ImageInUse, match='busy with a block job'):
        drv.merge(live, _loc(disk['path']), None, live, rec)
    assert rec.steps == [] and dom.calls == []
    assert images.backing_file(top) == disk['path']


def test_refuses_a_domain_libvirt_does_not_know(setup):
    drv, _dom, disk, _imgdir = setup

    def unknown(uuid):
        err = FakeError('Domain not found')
        err.get_error_code = lambda: FAKE.VIR_ERR_NO_DOMAIN
        raise err
    drv._conn.lookupByUUIDString.side_effect = unknown
    for call in (lambda: drv.create_snapshot(disk, 's1', StepRecorder()),
                 lambda: drv.revert(disk, _loc(disk['path']), 'r',
                                    StepRecorder())):
        with pytest.raises(exception.InvalidRequest, match='No libvirt'):
            call()
    # Nothing runs it: not online, nothing to resume (as QEMU's driver
    # answers for a socket no QEMU listens on).
    assert drv.is_online(disk) is False
    assert drv.resume(disk) is False


def test_other_libvirt_errors_stay_libvirt_errors(setup):
    drv, _dom, disk, _imgdir = setup
    drv._conn.lookupByUUIDString.side_effect = FakeError('connection reset')
    with pytest.raises(lvguest.LibvirtError):
        drv.is_online(disk)


def test_refuses_a_revert_of_a_running_domain(setup):
    drv, dom, disk, imgdir = setup
    with pytest.raises(exception.ServerRunning):
        drv.revert(disk, _loc(disk['path']), 'r', StepRecorder())
    assert not os.path.exists(os.path.join(imgdir, 'r.qcow2'))


# -- snapshot groups ---------------------------------------------------------
@pytest.fixture
def two_disks(setup):
    drv, dom, disk, imgdir = setup
    second = os.path.join(imgdir, 'second.qcow2')
    images.create_base(second, 1024 * 1024)
    dom.chains['vdb'] = [second]
    return drv, dom, [disk, lvdriver.disk_locator(UUID, 'vdb', second)], \
        imgdir


@pytest.mark.parametrize('mode', ['suspend', 'transaction'])
def test_group_switches_every_disk_in_one_call(two_disks, mode):
    drv, dom, disks, imgdir = two_disks
    drv.snapshot_pause = mode
    xmls = []

    def switch(d, xml):
        xmls.append(xml)
        switch_all(d, xml)
    dom.snapshot_effect = switch
    rec = StepRecorder()
    res = drv.create_snapshots(disks, ['g1', 'g2'], rec)
    new = [os.path.join(imgdir, 'g1.qcow2'), os.path.join(imgdir, 'g2.qcow2')]
    assert res['online'] is True
    assert [s['disk'] for s in res['snapshots']] == [
        dict(disks[0], path=new[0]), dict(disks[1], path=new[1])]
    assert [s['snapshot'] for s in res['snapshots']] == [
        _loc(disks[0]['path']), _loc(disks[1]['path'])]
    # ONE snapshotCreateXML naming both disks, with the single-disk flags.
    assert dom.calls == (['suspend', SNAP, 'resume'] if mode == 'suspend'
                         else [SNAP])
    disks_xml = ET.fromstring(xmls[0]).findall('./disks/disk')
    assert sorted((d.get('name'), d.get('snapshot'),
                   d.find('source').get('file')) for d in disks_xml) == [
        ('vda', 'external', new[0]), ('vdb', 'external', new[1])]
    assert [s['name'] for s in rec.steps] == [
        'prepare', 'prepare', 'pause', 'snapshot', 'resume']
    for path, old in zip(new, disks):
        assert images.backing_file(path) == old['path']
    # Run again: found done, libvirt not called.
    dom.calls.clear()
    assert drv.create_snapshots(disks, ['g1', 'g2'], StepRecorder()) == res
    assert dom.calls == []


def test_group_leaves_other_disks_out(two_disks):
    drv, dom, disks, imgdir = two_disks
    xmls = []
    dom.snapshot_effect = lambda d, xml: (xmls.append(xml),
                                          switch_all(d, xml))
    drv.create_snapshots(disks[1:], ['g2'], StepRecorder())
    got = {d.get('name'): d.get('snapshot')
           for d in ET.fromstring(xmls[0]).findall('./disks/disk')}
    assert got == {'vda': 'no', 'vdb': 'external'}


def test_group_failure_switches_none_and_drops_the_layers(two_disks):
    drv, dom, disks, imgdir = two_disks

    def fail(d, xml):
        raise FakeError('transaction failed')
    dom.snapshot_effect = fail
    with pytest.raises(lvguest.LibvirtError):
        drv.create_snapshots(disks, ['g1', 'g2'], StepRecorder())
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    assert not os.path.exists(os.path.join(imgdir, 'g1.qcow2'))
    assert not os.path.exists(os.path.join(imgdir, 'g2.qcow2'))


def test_group_refuses_a_partial_switch(two_disks):
    """libvirt switches a group all or none: one disk found on its new
    layer and not the other is not this operation's doing.
    """
    drv, dom, disks, imgdir = two_disks
    g1 = os.path.join(imgdir, 'g1.qcow2')
    images.create_overlay(g1, disks[0]['path'])
    dom.chain.insert(0, g1)
    with pytest.raises(exception.InvalidRequest, match='Only some'):
        drv.create_snapshots(disks, ['g1', 'g2'], StepRecorder())
    assert dom.calls == []


@pytest.mark.parametrize('bad,why', [
    ('other_domain', 'one VM'), ('twice', 'named twice'),
    ('names', 'One layer name')])
def test_group_refusals(two_disks, bad, why):
    drv, dom, disks, imgdir = two_disks
    names = ['g1', 'g2']
    if bad == 'other_domain':
        disks[1] = dict(disks[1], domain='another-uuid')
    elif bad == 'twice':
        disks[1] = disks[0]
    else:
        names = ['g1']
    with pytest.raises(exception.InvalidRequest, match=why):
        drv.create_snapshots(disks, names, StepRecorder())
    assert dom.calls == []
    assert not os.path.exists(os.path.join(imgdir, 'g1.qcow2'))


def test_group_offline_points_every_disk_in_one_define(two_disks):
    drv, dom, disks, imgdir = two_disks
    dom.active = 0
    dom.state_value = 5
    dom.isPersistent = lambda: 1
    defined = []

    def define(xml):
        defined.append(xml)
        for disk in ET.fromstring(xml).findall('./devices/disk'):
            target = disk.find('target').get('dev')
            dom.chains[target] = [disk.find('source').get('file')]
    drv._conn.defineXML.side_effect = define
    res = drv.create_snapshots(disks, ['g1', 'g2'], StepRecorder())
    assert res['online'] is False
    assert len(defined) == 1
    assert dom.chains == {'vda': [os.path.join(imgdir, 'g1.qcow2')],
                          'vdb': [os.path.join(imgdir, 'g2.qcow2')]}
    assert drv.create_snapshots(disks, ['g1', 'g2'], StepRecorder()) == res
    assert len(defined) == 1


# -- the audit ----------------------------------------------------------------
def test_inspect_lists_files_no_locator_names_with_their_leftovers(setup):
    """As the QEMU driver: named files are not listed, a work file is the
    leftover of its layer's locator, a socket is no file, a locator
    elsewhere is an error.
    """
    import socket
    drv, _dom, disk, imgdir = setup
    trashed = disk['path'] + images.TRASH_SUFFIX
    stray = os.path.join(imgdir, 'stray.qcow2')
    for path in (trashed, stray):
        with open(path, 'wb') as f:
            f.write(b'x')
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(imgdir, 'vm.sock'))
    try:
        out = drv.inspect([disk, _loc('/etc/passwd')])
    finally:
        sock.close()
    live, bad = out['images']
    assert live['exists'] and live['check'] == 'ok' and not live['error']
    assert bad['error'] and not bad['exists']
    assert sorted(out['files'], key=lambda f: f['path']) == [
        {'path': trashed, 'locator': disk},
        {'path': stray, 'locator': None}]
