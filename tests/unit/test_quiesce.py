"""Quiesce: the QGA client, the QEMU driver's freeze/thaw around the
pause, the journal's ``frozen`` mark and recovery's thaw (a fake guest
agent on a unix socket)."""

import json
import os
import socket
import tempfile
import threading

import pytest

from agent.driver.qemu import driver as qemu
from agent.driver.qemu import qga
from agent import exception
from agent import journal as journal_mod
from agent import recovery
from agent import steps


class FakeGuestAgent(object):
    """A qemu-ga on a unix socket: answers guest-sync, fsfreeze-*.

    :param hang_freeze: never answer guest-fsfreeze-freeze (but freeze).
    """

    def __init__(self, path, hang_freeze=False):
        self.path = path
        self.hang_freeze = hang_freeze
        self.state = 'thawed'
        self.commands = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,),
                             daemon=True).start()

    def _client(self, conn):
        # A stale reply of an earlier client, which guest-sync drops.
        conn.sendall(b'{"return": 12}\n')
        buf = b''
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b'\n' in buf:
                line, buf = buf.split(b'\n', 1)
                msg = json.loads(line)
                cmd = msg['execute']
                self.commands.append(cmd)
                if cmd == 'guest-sync':
                    reply = {'return': msg['arguments']['id']}
                elif cmd == 'guest-fsfreeze-freeze':
                    self.state = 'frozen'
                    if self.hang_freeze:
                        continue
                    reply = {'return': 1}
                elif cmd == 'guest-fsfreeze-thaw':
                    self.state = 'thawed'
                    reply = {'return': 1}
                elif cmd == 'guest-fsfreeze-status':
                    reply = {'return': self.state}
                else:
                    reply = {'error': {'class': 'CommandNotFound',
                                       'desc': cmd}}
                conn.sendall(json.dumps(reply).encode() + b'\n')

    def close(self):
        self.sock.close()


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory() as d:
        yield d


def _agent(tmp, **kw):
    return FakeGuestAgent(os.path.join(tmp, 'qga.sock'), **kw)


def _driver(tmp, timeout=5.0):
    return qemu.QemuDriver([tmp], quiesce_timeout=timeout)


def test_client_sync_skips_stale_and_freezes(tmp):
    ga = _agent(tmp)
    with qga.QGASession(ga.path, timeout=2) as s:
        assert s.freeze() == 1
        assert s.status() == 'frozen'
        assert s.thaw() == 1
    assert ga.state == 'thawed'
    assert qga.thaw(ga.path) is False


def test_freeze_ok_thaws_after_pause(tmp):
    ga = _agent(tmp)
    rec = steps.StepRecorder()
    outcome = {}
    seen = []
    with _driver(tmp)._quiesced('preferred', ga.path, rec, outcome):
        seen.append(ga.state)
    assert seen == ['frozen']
    assert ga.state == 'thawed'
    assert outcome['consistency'] == 'application'
    assert [s['name'] for s in rec.steps] == ['freeze', 'thaw']
    assert all(s['status'] == 'done' for s in rec.steps)
    assert rec.steps[0]['duration_ms'] is not None


def test_freeze_timeout_preferred_goes_on_crash(tmp):
    ga = _agent(tmp, hang_freeze=True)
    rec = steps.StepRecorder()
    outcome = {}
    ran = []
    with _driver(tmp, timeout=0.3)._quiesced('preferred', ga.path, rec,
                                             outcome):
        ran.append(True)
    assert ran == [True]
    assert ga.state == 'thawed'
    assert outcome['consistency'] == 'crash'
    assert 'did not freeze' in outcome['consistency_reason']
    assert [(s['name'], s['status']) for s in rec.steps] == [
        ('freeze', 'failed'), ('thaw', 'done')]


def test_freeze_timeout_required_fails_thawed(tmp):
    ga = _agent(tmp, hang_freeze=True)
    rec = steps.StepRecorder()
    ran = []
    with pytest.raises(exception.QuiesceFailed):
        with _driver(tmp, timeout=0.3)._quiesced('required', ga.path, rec,
                                                 {}):
            ran.append(True)
    assert ran == []
    assert ga.state == 'thawed'


def test_no_channel(tmp):
    outcome = {}
    with _driver(tmp)._quiesced('preferred', None, steps.StepRecorder(),
                                outcome):
        pass
    assert outcome['consistency'] == 'crash'
    assert 'no guest agent' in outcome['consistency_reason']
    with pytest.raises(exception.QuiesceFailed):
        with _driver(tmp)._quiesced('required', None, steps.StepRecorder(),
                                    {}):
            pass
    outcome = {}
    with _driver(tmp)._quiesced('off', '/nowhere', steps.StepRecorder(),
                                outcome):
        pass
    assert outcome == {'consistency': 'crash',
                       'consistency_reason': 'quiesce off'}


def test_thaw_in_finally_on_pivot_failure(tmp):
    ga = _agent(tmp)
    rec = steps.StepRecorder()
    with pytest.raises(exception.PauseDeadlineExceeded):
        with _driver(tmp)._quiesced('required', ga.path, rec, {}):
            assert ga.state == 'frozen'
            raise exception.PauseDeadlineExceeded('pivot failed')
    assert ga.state == 'thawed'
    assert rec.steps[-1]['name'] == 'thaw'


def test_journal_marks_frozen_and_recovery_thaws(tmp):
    """The runner's listener journals ``frozen`` durably when the freeze
    starts; an agent that dies before the thaw leaves it so, and
    recovery thaws the guest.
    """
    from agent import task_runner
    ga = _agent(tmp)
    jdir = os.path.join(tmp, 'journal')
    os.mkdir(jdir)
    journal = journal_mod.Journal(jdir)
    driver = _driver(tmp)
    disk = {'driver': 'qemu', 'path': os.path.join(tmp, 'd.qcow2'),
            'qmp_socket': os.path.join(tmp, 'qmp.sock'),
            'qga_socket': ga.path}
    task = {'operation_id': 'op1', 'disk': disk, 'layer_name': 'd-op1',
            'quiesce': 'required'}
    journal.record('op1', action='create_snapshot', task=task,
                   state='running', paused=False)
    runner = task_runner.TaskRunner.__new__(task_runner.TaskRunner)
    runner.journal = journal
    rec = steps.StepRecorder(
        listener=runner._journal_listener('create_snapshot', 'op1'))

    class Died(BaseException):
        pass

    # The agent "dies" while frozen: no thaw step runs.
    with pytest.raises(Died):
        with rec.step('freeze'):
            with qga.QGASession(ga.path) as s:
                s.freeze()
            raise Died()
    assert journal.get('op1')['frozen'] is True
    assert ga.state == 'frozen'

    assert recovery.thaw_frozen(driver, journal, journal.get('op1'))
    assert ga.state == 'thawed'
    assert journal.get('op1')['frozen'] is False
    assert ga.commands[-2:] == ['guest-fsfreeze-status',
                                'guest-fsfreeze-thaw']


def test_thaw_step_clears_frozen(tmp):
    from agent import task_runner
    jdir = os.path.join(tmp, 'journal')
    os.mkdir(jdir)
    journal = journal_mod.Journal(jdir)
    journal.record('op2', state='running')
    runner = task_runner.TaskRunner.__new__(task_runner.TaskRunner)
    runner.journal = journal
    rec = steps.StepRecorder(
        listener=runner._journal_listener('create_snapshot', 'op2'))
    with rec.step('freeze'):
        pass
    assert journal.get('op2')['frozen'] is True
    with rec.step('thaw'):
        pass
    assert journal.get('op2')['frozen'] is False


def test_driver_without_guest_agent_support():
    """A driver whose ``can_quiesce`` says no (the fake driver for a VM
    without a guest agent): ``preferred`` is crash-consistent
    with the reason, ``required`` fails before any work.
    """
    from agent.driver import fake
    from agent import task_runner
    driver = fake.FakeDriver()
    disk = driver.add_disk('/fake/d.qcow2')
    runner = task_runner.TaskRunner.__new__(task_runner.TaskRunner)
    runner.driver = driver
    task = {'disk': disk, 'layer_name': 'n1', 'quiesce': 'preferred'}
    result = runner._create_snapshot(None, task, steps.StepRecorder())
    assert result['consistency'] == 'crash'
    assert 'fake driver' in result['consistency_reason']
    task = {'disk': disk, 'layer_name': 'n2', 'quiesce': 'required'}
    with pytest.raises(exception.QuiesceFailed):
        runner._create_snapshot(None, task, steps.StepRecorder())
    assert driver.calls['create_snapshot'] == 1


def test_quiesce_is_part_of_the_driver_contract(tmp):
    from agent.driver import base
    from agent.driver import fake
    from agent.driver.libvirt import driver as libvirt
    # Both real drivers freeze (or say why not) themselves.
    assert libvirt.LibvirtDriver.can_quiesce is not base.Driver.can_quiesce
    assert _driver(tmp).can_quiesce({'driver': 'qemu'})
    driver = fake.FakeDriver()
    driver.add_vm('plain')
    driver.add_vm('agent', guest_agent=True)
    assert not driver.can_quiesce(driver.add_disk('/fake/a', vm='plain'))
    assert driver.can_quiesce(driver.add_disk('/fake/b', vm='agent'))


def _fake_runner(tmp, **kw):
    from agent.driver import fake
    from agent import task_runner
    from livesnap_tools import fixtures
    driver = fake.FakeDriver()
    driver.add_vm('vm1', guest_agent=True)
    os.mkdir(os.path.join(tmp, 'journal'))
    return task_runner.TaskRunner(
        driver, journal_mod.Journal(os.path.join(tmp, 'journal')),
        fixtures.FakeConductor(), 'hv1', **kw)


def _group_task(driver, quiesce, op='g1'):
    disks = [driver.add_disk('/fake/%s-%s' % (op, n), vm='vm1')
             for n in ('vda', 'vdb')]
    return {'operation_id': op, 'disk': disks[0], 'disks': disks,
            'layer_names': ['%s-a' % op, '%s-b' % op], 'quiesce': quiesce}


def test_group_is_frozen_once_around_its_one_snapshot_step(tmp):
    runner = _fake_runner(tmp)
    runner.run({}, 'create_snapshots', _group_task(runner.driver,
                                                   'preferred'))
    report = runner.conductor_api.reports[0][1]
    assert report['status'] == 'succeeded', report
    names = [s['name'] for s in report['steps']]
    assert names == ['prepare', 'prepare', 'freeze', 'snapshot', 'thaw']
    for snap in report['result']['snapshots']:
        assert snap['consistency'] == 'application'
        assert 'frozen' in snap['consistency_reason']
    assert runner.driver.vms['vm1']['frozen'] is False
    assert runner.journal.get('g1')['frozen'] is False


def test_group_required_without_freeze_fails_and_pivots_nothing(tmp):
    runner = _fake_runner(tmp)
    runner.driver.vms['vm1']['freeze_fails'] = True
    task = _group_task(runner.driver, 'required')
    before = dict(runner.driver.layers)
    runner.run({}, 'create_snapshots', task)
    report = runner.conductor_api.reports[0][1]
    assert report['status'] == 'failed'
    assert report['error_code'] == 'quiesce_failed'
    assert runner.driver.layers == before
    # ``preferred``: crash-consistent, and every member says why.
    runner.run({}, 'create_snapshots', dict(task, operation_id='g2',
                                            quiesce='preferred'))
    report = runner.conductor_api.reports[1][1]
    assert report['status'] == 'succeeded', report
    assert {s['consistency'] for s in report['result']['snapshots']} == \
        {'crash'}
    assert all('did not freeze' in s['consistency_reason']
               for s in report['result']['snapshots'])


def test_group_without_guest_agent_support():
    from agent.driver import fake
    from agent import task_runner
    driver = fake.FakeDriver()
    driver.add_vm('vm1')
    runner = task_runner.TaskRunner.__new__(task_runner.TaskRunner)
    runner.driver = driver
    task = _group_task(driver, 'preferred')
    result = runner._create_snapshots(None, task, steps.StepRecorder())
    assert [s['consistency'] for s in result['snapshots']] == ['crash'] * 2
    assert 'fake driver' in result['snapshots'][0]['consistency_reason']
    with pytest.raises(exception.QuiesceFailed):
        runner._create_snapshots(None, _group_task(driver, 'required', 'g2'),
                                 steps.StepRecorder())
    assert driver.calls['create_snapshots'] == 1


def _wait_thaw_retries(runner, op):
    """Until no thread retries the thaw of ``op`` (threads are daemons
    that end by the retry deadline).
    """
    for thread in threading.enumerate():
        if thread.name == 'thaw-%s' % op:
            thread.join(30)


def test_failed_thaw_is_retried_until_thawed(tmp):
    runner = _fake_runner(tmp, thaw_retry_interval=0.01)
    vm = runner.driver.vms['vm1']
    # The thaw after the snapshot fails, and so does the first retry.
    vm['thaw_failures'] = 2
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    runner.run({}, 'create_snapshot', {'operation_id': 'op1', 'disk': disk,
                                       'layer_name': 'd2',
                                       'quiesce': 'preferred'})
    report = runner.conductor_api.reports[0][1]
    assert report['status'] == 'succeeded', report
    assert report['steps'][-1]['name'] == 'thaw'
    assert report['steps'][-1]['status'] == 'failed'
    _wait_thaw_retries(runner, 'op1')
    entry = runner.journal.get('op1')
    assert vm['frozen'] is False
    assert entry['frozen'] is False
    assert entry['thaw_attempts'] == 2
    assert entry['thaw_error'] is None
    # Thawed: the acknowledgement archives the entry as usual.
    runner.acknowledge('op1')
    assert runner.journal.entries() == []


def test_thaw_retries_end_at_the_deadline_and_the_journal_keeps_it(tmp):
    runner = _fake_runner(tmp, thaw_retry_interval=0.01,
                          thaw_retry_timeout=0.05)
    vm = runner.driver.vms['vm1']
    vm['thaw_failures'] = 10 ** 6
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    runner.run({}, 'create_snapshot', {'operation_id': 'op1', 'disk': disk,
                                       'layer_name': 'd2',
                                       'quiesce': 'preferred'})
    _wait_thaw_retries(runner, 'op1')
    entry = runner.journal.get('op1')
    assert vm['frozen'] is True
    assert entry['frozen'] is True
    assert entry['thaw_attempts'] >= 1
    assert 'did not thaw' in entry['thaw_error']
    # Acknowledged, it stays live for the next start's recovery, which
    # thaws the guest once it answers.
    runner.acknowledge('op1')
    assert [e['operation_id'] for e in runner.journal.entries()] == ['op1']
    vm['thaw_failures'] = 0
    assert recovery.thaw_frozen(runner.driver, runner.journal,
                                runner.journal.get('op1'))
    assert vm['frozen'] is False


def test_thaw_retry_waits_while_another_operation_has_the_guest_frozen(tmp):
    runner = _fake_runner(tmp, thaw_retry_interval=0.01,
                          thaw_retry_timeout=0.2)
    vm = runner.driver.vms['vm1']
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    vm['frozen'] = True
    # op2 is between its freeze and its thaw on the same guest.
    runner._running.add('op2')
    runner.journal.record('op2', action='create_snapshot', state='running',
                          frozen=True, task={'operation_id': 'op2',
                                             'disk': disk,
                                             'layer_name': 'x'})
    runner.journal.record('op1', action='create_snapshot', state='done',
                          frozen=True, task={'operation_id': 'op1',
                                             'disk': disk,
                                             'layer_name': 'y'})
    runner.retry_thaw(runner.journal.get('op1')).join(30)
    assert vm['frozen'] is True
    assert runner.driver.calls['thaw_guest'] == 0
    assert runner.journal.get('op1')['frozen'] is True


def test_thaw_retry_is_not_held_up_by_a_stale_frozen_entry(tmp):
    """An unfinished journal entry marked frozen whose operation does not
    run in this agent (a leftover) does not stop the retries.
    """
    runner = _fake_runner(tmp, thaw_retry_interval=0.01,
                          thaw_retry_timeout=5)
    vm = runner.driver.vms['vm1']
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    vm['frozen'] = True
    runner.journal.record('op2', action='create_snapshot', state='running',
                          frozen=True, task={'operation_id': 'op2',
                                             'disk': disk,
                                             'layer_name': 'x'})
    runner.journal.record('op1', action='create_snapshot', state='done',
                          frozen=True, task={'operation_id': 'op1',
                                             'disk': disk,
                                             'layer_name': 'y'})
    runner.retry_thaw(runner.journal.get('op1')).join(30)
    assert vm['frozen'] is False
    assert runner.journal.get('op1')['frozen'] is False


def test_thaw_retry_waits_for_a_quiesced_create_on_the_guest(tmp):
    """A quiesced create holds its guest's lock from before its freeze to
    after its thaw: a retry for the same guest cannot thaw in between.
    """
    runner = _fake_runner(tmp, thaw_retry_interval=0.01,
                          thaw_retry_timeout=5)
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    lock = runner._guest_lock(disk)
    with runner._frozen_guest(disk, {'quiesce': 'required'}):
        assert not lock.acquire(blocking=False)
    assert lock.acquire(blocking=False)
    lock.release()
    with runner._frozen_guest(disk, {}):
        assert lock.acquire(blocking=False)
        lock.release()


def test_recovery_retries_a_thaw_that_fails_at_start(tmp):
    runner = _fake_runner(tmp, thaw_retry_interval=0.01)
    vm = runner.driver.vms['vm1']
    disk = runner.driver.add_disk('/fake/d', vm='vm1')
    vm['frozen'], vm['thaw_failures'] = True, 1
    runner.journal.record('op1', action='create_snapshot', state='done',
                          frozen=True, report={'status': 'succeeded'},
                          task={'operation_id': 'op1', 'disk': disk,
                                'layer_name': 'y'})
    recovery.recover(runner)
    _wait_thaw_retries(runner, 'op1')
    assert vm['frozen'] is False
    assert runner.journal.get('op1')['frozen'] is False
    assert runner.journal.get('op1')['thaw_attempts'] == 1
