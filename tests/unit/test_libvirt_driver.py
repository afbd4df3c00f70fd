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

import pytest

from agent import exception
from agent import images
from agent.driver import libvirt as lvdriver
from agent.steps import StepRecorder

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
    VIR_ERR_BLOCK_COPY_ACTIVE=-1)


class FakeDomain(object):
    """A running domain with one disk ``vda`` whose chain is ``chain``."""

    def __init__(self, chain):
        self.chain = list(chain)
        self.state_value = FAKE.VIR_DOMAIN_RUNNING
        self.calls = []
        self.snapshot_effect = None
        self.resume_failures = 0

    def name(self):
        return 'dom1'

    def UUIDString(self):
        return UUID

    def isActive(self):
        return 1

    def isPersistent(self):
        return 0

    def state(self):
        return self.state_value, 0

    def XMLDesc(self, flags=0):
        inner = ''
        for path in reversed(self.chain[1:]):
            inner = ("<backingStore type='file'><source file='%s'/>%s"
                     "</backingStore>" % (path, inner))
        return ("<domain><devices><disk type='file' device='disk'>"
                "<source file='%s'/>%s<target dev='vda'/></disk>"
                "</devices></domain>" % (self.chain[0], inner))

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
        self.calls.append('snapshot')
        if self.snapshot_effect is not None:
            self.snapshot_effect(self, xml)


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
    with mock.patch.object(lvdriver, 'libvirt', FAKE):
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
        assert dom.calls == ['suspend', 'snapshot', 'resume']
    else:
        assert dom.calls == ['snapshot']
    assert not rec.paused and rec.pause_ms is not None


def test_failed_snapshot_resumes_and_drops_overlay(setup):
    drv, dom, disk, imgdir = setup

    def fail(d, xml):
        raise FakeError('no')
    dom.snapshot_effect = fail
    rec = StepRecorder()
    with pytest.raises(lvdriver.LibvirtError):
        drv.create_snapshot(disk, 's1', rec)
    assert dom.calls == ['suspend', 'snapshot', 'resume']
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
    resume step says who resumed."""
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
    assert dom.calls == ['suspend', 'snapshot', 'resume']
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
    resume = rec.steps[-1]
    assert resume['name'] == 'resume' and resume['status'] == 'done'
    assert resume['detail']['by'] == 'watchdog'
    assert resume['detail']['deadline_ms'] == 50.0
    assert not rec.paused and rec.pause_ms is not None


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
    assert dom.calls == ['suspend', 'snapshot', 'resume']
    assert 'by' not in rec.steps[-1]['detail']
    # Disarmed: nothing resumes the domain later.
    dom.state_value = FAKE.VIR_DOMAIN_PAUSED
    time.sleep(0.6)
    assert dom.calls == ['suspend', 'snapshot', 'resume']


def test_watchdog_bounds_the_flush_pause(setup):
    """The suspend before a merge's delete (the flush) is bounded too: a
    suspend call that returns late finds the domain resumed by the
    watchdog, and the merge goes on."""
    drv, dom, disk, _imgdir = setup
    drv.pause_deadline = 0.05

    def slow_suspend():
        dom.calls.append('suspend')
        dom.state_value = FAKE.VIR_DOMAIN_PAUSED
        _wait_for(lambda: dom.state_value == FAKE.VIR_DOMAIN_RUNNING)
    dom.suspend = slow_suspend
    rec = StepRecorder()
    drv._flush(dom, rec)
    assert dom.calls == ['suspend', 'resume']
    assert [s['name'] for s in rec.steps] == ['pause', 'resume']
    assert rec.steps[-1]['detail']['by'] == 'watchdog'
    assert dom.state_value == FAKE.VIR_DOMAIN_RUNNING
