"""Quiesce on libvirt: ``fsFreeze`` before the pause, ``fsThaw`` after it
in a ``finally``, journaled, bounded by ``quiesce_timeout``, with the fake
libvirt of tests/unit/test_libvirt_driver.py (a domain whose XML has the
guest agent's channel, and a guest agent that freezes, fails or hangs).
The real guest is in tests/functional/test_libvirt_guest.py.
"""

import os
from unittest import mock

import pytest

from agent.driver.libvirt import driver as lvdriver
from agent.driver.libvirt import guest as lvguest
from agent.driver.libvirt import pause as lvpause
from agent import exception
from agent import images
from agent import journal as journal_mod
from agent import recovery
from agent.steps import StepRecorder
from agent import task_runner
from livesnap_tools import fixtures
from tests.unit.test_libvirt_driver import FAKE
from tests.unit.test_libvirt_driver import FakeDomain
from tests.unit.test_libvirt_driver import FakeError
from tests.unit.test_libvirt_driver import switch_all
from tests.unit.test_libvirt_driver import UUID

CHANNEL = ("<channel type='unix'><target type='virtio' "
           "name='org.qemu.guest_agent.0' state='%s'/></channel>")


class AgentDomain(FakeDomain):
    """A running domain with the guest agent's channel (unless
    ``channel`` is False; its ``agent_state`` as libvirt reports it) and a
    guest agent: ``frozen``, ``freeze_error``
    (fsFreeze fails with it), ``freeze_takes`` (seconds the freeze
    answers after, frozen all the same), ``thaw_failures``.
    """

    def __init__(self, chain):
        super().__init__(chain)
        self.channel = True
        self.agent_state = 'connected'
        self.frozen = False
        self.freeze_error = None
        self.freeze_takes = 0.0
        self.thaw_failures = 0
        self.agent_timeout = None
        self.agent_timeouts = []
        self.clock = None

    def XMLDesc(self, flags=0):
        xml = super().XMLDesc(flags)
        if self.channel:
            xml = xml.replace('</devices>',
                              CHANNEL % self.agent_state + '</devices>')
        return xml

    def agentSetResponseTimeout(self, timeout, flags):
        self.agent_timeout = timeout
        self.agent_timeouts.append(timeout)

    def fsFreeze(self, mountpoints=None, flags=0):
        self.calls.append('fsFreeze')
        if self.freeze_error:
            raise FakeError(self.freeze_error)
        if self.freeze_takes:
            self.clock[0] += self.freeze_takes
        self.frozen = True
        return 2

    def fsThaw(self, mountpoints=None, flags=0):
        self.calls.append('fsThaw')
        if self.thaw_failures:
            self.thaw_failures -= 1
            raise FakeError('Guest agent is not responding')
        was, self.frozen = self.frozen, False
        return 2 if was else 0


@pytest.fixture
def agent_setup(tmp_path):
    imgdir = str(tmp_path / 'images')
    os.mkdir(imgdir)
    base = os.path.join(imgdir, 'base.qcow2')
    images.create_base(base, 1024 * 1024)
    dom = AgentDomain([base])
    dom.snapshot_effect = switch_all
    clock = dom.clock = [1000.0]
    conn = mock.Mock()
    conn.lookupByUUIDString.return_value = dom
    conn.isAlive.return_value = 1
    with mock.patch.object(lvdriver, 'libvirt', FAKE), \
            mock.patch.object(lvguest, 'libvirt', FAKE), \
            mock.patch.object(lvpause, 'libvirt', FAKE), \
            mock.patch.object(lvdriver.time, 'monotonic',
                              side_effect=lambda: clock[0]):
        drv = lvdriver.LibvirtDriver([imgdir], uri='test:///x',
                                     snapshot_pause='suspend',
                                     job_poll_interval=0.01,
                                     resume_retries=3, pause_deadline=5.0,
                                     quiesce_timeout=2.5)
        drv._conn = conn
        disk = lvdriver.disk_locator(UUID, 'vda', base)
        yield drv, dom, disk, imgdir


def _names(rec):
    return [s['name'] for s in rec.steps]


def test_can_quiesce(agent_setup):
    drv, _dom, disk, _ = agent_setup
    assert drv.can_quiesce(disk) is True


@pytest.mark.parametrize('mode', ['suspend', 'transaction'])
def test_freeze_before_the_pause_thaw_after(agent_setup, mode):
    drv, dom, disk, imgdir = agent_setup
    drv.snapshot_pause = mode
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert _names(rec) == ['prepare', 'freeze', 'pause', 'snapshot',
                           'resume', 'thaw']
    assert res['consistency'] == 'application'
    assert 'frozen' in res['consistency_reason']
    assert res['disk']['path'] == os.path.join(imgdir, 's1.qcow2')
    assert not dom.frozen
    snapshot_calls = [c for c in dom.calls if c not in ('suspend', 'resume')]
    assert snapshot_calls[0] == 'fsFreeze' and \
        snapshot_calls[-1] == 'fsThaw'
    # libvirt's wait for the agent is bounded by the quiesce timeout, and
    # given back to libvirt's default once thawed.
    assert dom.agent_timeouts == [3, 3, -1]
    assert rec.steps[1]['detail']['filesystems'] == 2


def test_off_and_none_do_not_freeze(agent_setup):
    drv, dom, disk, _ = agent_setup
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='off')
    assert (res['consistency'], res['consistency_reason']) == (
        'crash', 'quiesce off')
    res = drv.create_snapshot(dict(disk, path=res['disk']['path']), 's2',
                              StepRecorder())
    assert 'consistency' not in res
    assert 'fsFreeze' not in dom.calls and 'fsThaw' not in dom.calls
    assert 'freeze' not in _names(rec)


def test_failed_freeze_preferred_goes_on_crash_thawed(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.freeze_error = 'Guest agent is not responding: QEMU guest agent ' \
                       'is not connected'
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='preferred')
    assert _names(rec) == ['prepare', 'freeze', 'thaw', 'pause', 'snapshot',
                           'resume']
    assert rec.steps[1]['status'] == 'failed'
    assert res['consistency'] == 'crash'
    assert 'not connected' in res['consistency_reason']
    assert res['online'] is True and dom.chain[0] == res['disk']['path']


def test_failed_freeze_required_fails_before_the_pause(agent_setup):
    drv, dom, disk, imgdir = agent_setup
    dom.freeze_error = 'guest-fsfreeze-freeze failed'
    rec = StepRecorder()
    with pytest.raises(exception.QuiesceFailed) as err:
        drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert 'fsfreeze' in str(err.value)
    assert _names(rec) == ['prepare', 'freeze', 'thaw']
    assert 'suspend' not in dom.calls
    assert not any(isinstance(c, tuple) for c in dom.calls)  # no snapshot
    assert not os.path.exists(os.path.join(imgdir, 's1.qcow2'))
    assert dom.chain == [disk['path']]


def test_freeze_past_the_timeout_is_thawed_at_once(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.freeze_takes = 3.0  # answers past quiesce_timeout (2.5 s)
    rec = StepRecorder()
    with pytest.raises(exception.QuiesceFailed) as err:
        drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert 'past the quiesce timeout' in str(err.value)
    assert not dom.frozen and dom.calls[-1] == 'fsThaw'
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='preferred')
    assert res['consistency'] == 'crash' and not dom.frozen
    assert 'past the quiesce timeout' in res['consistency_reason']


def test_no_channel(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.channel = False
    with pytest.raises(exception.QuiesceFailed) as err:
        drv.create_snapshot(disk, 's1', StepRecorder(), quiesce='required')
    assert 'org.qemu.guest_agent.0' in str(err.value)
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='preferred')
    assert res['consistency'] == 'crash'
    assert 'no guest agent channel' in res['consistency_reason']
    assert 'freeze' not in _names(rec) and 'fsFreeze' not in dom.calls
    assert drv.thaw_guest(disk) is False


def test_agent_not_connected_is_not_asked(agent_setup):
    """libvirt says no agent has the port open: no freeze is sent (and
    nothing journaled frozen).
    """
    drv, dom, disk, _ = agent_setup
    dom.agent_state = 'disconnected'
    rec = StepRecorder()
    with pytest.raises(exception.QuiesceFailed) as err:
        drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert 'not connected' in str(err.value)
    assert _names(rec) == ['prepare']
    res = drv.create_snapshot(disk, 's1', StepRecorder(),
                              quiesce='preferred')
    assert res['consistency'] == 'crash'
    assert 'not connected' in res['consistency_reason']
    assert 'fsFreeze' not in dom.calls


def test_thaw_in_finally_when_the_snapshot_fails(agent_setup):
    drv, dom, disk, _ = agent_setup

    def fail(d, xml):
        raise FakeError('no')
    dom.snapshot_effect = fail
    rec = StepRecorder()
    with pytest.raises(lvguest.LibvirtError):
        drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert _names(rec) == ['prepare', 'freeze', 'pause', 'snapshot',
                           'resume', 'thaw']
    assert not dom.frozen and dom.state_value == FAKE.VIR_DOMAIN_RUNNING


def test_failed_thaw_is_logged_and_the_guest_left_to_thaw_guest(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.thaw_failures = 1
    rec = StepRecorder()
    res = drv.create_snapshot(disk, 's1', rec, quiesce='required')
    assert res['consistency'] == 'application'
    assert rec.steps[-1]['name'] == 'thaw'
    assert rec.steps[-1]['status'] == 'failed'
    assert dom.frozen
    assert drv.thaw_guest(disk) is True and not dom.frozen
    assert drv.thaw_guest(disk) is False


def test_thaw_guest_of_a_domain_shut_off_or_gone(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.active = 0
    assert drv.thaw_guest(disk) is False
    err = FakeError('gone')
    err.get_error_code = lambda: FAKE.VIR_ERR_NO_DOMAIN
    drv._conn.lookupByUUIDString.side_effect = err
    assert drv.thaw_guest(disk) is False
    assert 'fsThaw' not in dom.calls


def test_offline_says_why_crash(agent_setup):
    drv, dom, disk, _ = agent_setup
    dom.active = 0
    res = drv.create_snapshot(disk, 's1', StepRecorder(),
                              quiesce='preferred')
    assert res['online'] is False and res['consistency'] == 'crash'
    assert 'offline' in res['consistency_reason']
    assert 'fsFreeze' not in dom.calls


def test_rerun_of_a_done_switch_says_the_freeze_is_unknown(agent_setup):
    drv, dom, disk, _ = agent_setup
    first = drv.create_snapshot(disk, 's1', StepRecorder(),
                                quiesce='required')
    dom.calls.clear()
    again = drv.create_snapshot(disk, 's1', StepRecorder(),
                                quiesce='required')
    assert again['disk'] == first['disk'] and dom.calls == []
    assert again['consistency'] == 'crash'
    assert 'not known' in again['consistency_reason']


def test_group_is_frozen_once(agent_setup):
    drv, dom, disk, imgdir = agent_setup
    second = os.path.join(imgdir, 'second.qcow2')
    images.create_base(second, 1024 * 1024)
    dom.chains['vdb'] = [second]
    disks = [disk, lvdriver.disk_locator(UUID, 'vdb', second)]
    rec = StepRecorder()
    res = drv.create_snapshots(disks, ['a', 'b'], rec, quiesce='required')
    assert _names(rec) == ['prepare', 'prepare', 'freeze', 'pause',
                           'snapshot', 'resume', 'thaw']
    assert dom.calls.count('fsFreeze') == 1 == dom.calls.count('fsThaw')
    assert [s['consistency'] for s in res['snapshots']] == [
        'application', 'application']


def test_runner_journals_frozen_and_recovery_thaws(agent_setup, tmp_path):
    """Through the task runner: ``frozen`` is journaled when the freeze
    starts and cleared by the thaw; an agent that died in between leaves
    it, and recovery thaws the domain with ``thaw_guest``.
    """
    drv, dom, disk, _ = agent_setup
    journal = journal_mod.Journal(str(tmp_path / 'journal'))
    runner = task_runner.TaskRunner(drv, journal, fixtures.FakeConductor(),
                                    'hv1')
    task = {'operation_id': 'op-1', 'disk': disk, 'layer_name': 's1',
            'quiesce': 'required'}
    seen = []
    real_freeze = dom.fsFreeze

    def freeze(*args):
        seen.append(journal.get('op-1').get('frozen'))
        return real_freeze(*args)
    dom.fsFreeze = freeze
    runner.run({}, 'create_snapshot', task)
    (_op, report), = runner.conductor_api.reports
    assert report['status'] == 'succeeded', report
    assert report['result']['consistency'] == 'application'
    assert seen == [True]
    assert not journal.get('op-1').get('frozen')

    # An agent that died between freeze and thaw.
    dom.frozen = True
    journal.record('op-2', action='create_snapshot', state='running',
                   frozen=True, task=dict(task, operation_id='op-2'))
    assert recovery.thaw_frozen(drv, journal, journal.get('op-2'))
    assert not dom.frozen and journal.get('op-2')['frozen'] is False
