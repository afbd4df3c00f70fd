"""The agent's side of recovery: reports re-sent until acknowledged,
abandoned operations refused, a task that died noticed, a journal that
cannot be written refusing work."""

import errno
import os
import threading
import time

import pytest

from agent.driver import fake
from agent import journal as journal_mod
from agent import manager
from agent import task_runner
from livesnap_tools import fixtures


class Driver(fake.FakeDriver):
    """The fake driver; ``calls`` counts creates only."""

    def __init__(self):
        super().__init__(['/i'])
        self.add_disk('/i/a')

    @property
    def creates(self):
        return self.calls['create_snapshot']


def _task(op='op-1'):
    return {'operation_id': op,
            'disk': {'driver': 'fake', 'vm': None, 'path': '/i/a'},
            'layer_name': 'b'}


@pytest.fixture
def runner(tmp_path):
    r = task_runner.TaskRunner(Driver(),
                               journal_mod.Journal(str(tmp_path / 'j')),
                               fixtures.FakeConductor(), 'hv1',
                               resend_interval=0.01, resend_max_interval=0.04)
    r.recovered.set()
    return r


def _statuses(runner):
    return [(op, r['status']) for op, r in runner.conductor_api.reports]


def _wait_reruns():
    for t in threading.enumerate():
        if t.name.startswith('rerun-'):
            t.join(timeout=30)


def test_report_carries_host_and_is_resent_until_acknowledged(runner):
    runner.resend_interval = 3600
    runner.run({}, 'create_snapshot', _task())
    assert _statuses(runner) == [('op-1', 'succeeded')]
    assert runner.conductor_api.hosts == ['hv1']
    # Not due yet: nothing re-sent.
    assert runner.resend_due({}) == 0
    runner._schedule['op-1'] = (0.0, 0.01)
    assert runner.resend_due({}) == 1
    assert len(runner.conductor_api.reports) == 2
    assert runner.conductor_api.reports[0] == runner.conductor_api.reports[1]
    # Each re-send waits twice as long, up to the cap.
    assert runner._schedule['op-1'][1] == 0.02
    time.sleep(0.05)
    runner.resend_due({})
    time.sleep(0.05)
    runner.resend_due({})
    assert runner._schedule['op-1'][1] == 0.04

    mgr = manager.AgentManager(runner)
    mgr.ack_report({}, 'op-1')
    sent = len(runner.conductor_api.reports)
    time.sleep(0.1)
    assert runner.resend_due({}, force=True) == 0
    assert len(runner.conductor_api.reports) == sent
    assert runner.journal.unacknowledged() == []
    assert runner.journal.entries() == []
    # The archived entry still answers a duplicate task, without work.
    runner.run({}, 'create_snapshot', _task())
    assert runner.driver.creates == 1
    assert mgr.get_operation({}, 'op-1')['state'] == 'done'


def test_acknowledgement_of_unknown_or_hostile_ids(runner):
    mgr = manager.AgentManager(runner)
    for op_id in ('never-seen', '../../etc/passwd', None, 7, ['x']):
        mgr.ack_report({}, op_id)
    assert not os.path.exists(os.path.join(runner.journal.directory,
                                           journal_mod.ARCHIVE))


def test_abandoned_operation_is_refused_by_id(runner):
    mgr = manager.AgentManager(runner)
    assert mgr.abandon_operation({}, 'op-1') == {'state': 'abandoned',
                                                 'report': None}
    # No expires_at: only the abandonment refuses it.
    runner.run({}, 'create_snapshot', _task())
    assert runner.driver.creates == 0
    assert runner.conductor_api.reports == []
    assert mgr.get_operation({}, 'op-1')['state'] == 'abandoned'
    assert mgr.abandon_operation({}, '../x') is None


def test_abandon_answers_how_a_seen_operation_stands(runner):
    mgr = manager.AgentManager(runner)
    runner.run({}, 'create_snapshot', _task())
    state = mgr.abandon_operation({}, 'op-1')
    assert state['state'] == 'done'
    assert state['report']['status'] == 'succeeded'

    answers = []
    runner.driver.hook = lambda: answers.append(
        mgr.abandon_operation({}, 'op-2'))
    runner.run({}, 'create_snapshot', _task('op-2'))
    assert answers == [{'state': 'running', 'report': None}]
    assert runner.driver.creates == 2


def test_expires_at_still_refuses_a_late_task(runner):
    runner.run({}, 'create_snapshot', _task(), expires_at=time.time() - 1)
    assert runner.driver.creates == 0
    (op_id, report), = runner.conductor_api.reports
    assert report['error_code'] == 'expired'


def test_task_that_died_is_run_again_when_asked(runner):
    """The journal says running, no thread runs it: not "in progress" for
    ever; the agent runs it again and reports.
    """
    runner.journal.record('op-1', action='create_snapshot', task=_task(),
                          state='running', step='prepare', paused=False)
    mgr = manager.AgentManager(runner)
    assert mgr.get_operation({}, 'op-1')['state'] == 'running'
    _wait_reruns()
    assert runner.driver.creates == 1
    assert _statuses(runner) == [('op-1', 'succeeded')]
    (_, report), = runner.conductor_api.reports
    assert report['steps'][0]['name'] == 'recover'
    assert mgr.get_operation({}, 'op-1')['state'] == 'done'


def test_no_rerun_before_the_start_up_replay(runner):
    runner.recovered.clear()
    runner.journal.record('op-1', action='create_snapshot', task=_task(),
                          state='running')
    assert runner.operation_state('op-1')['state'] == 'running'
    _wait_reruns()
    assert runner.driver.creates == 0


@pytest.fixture
def disk_full(monkeypatch):
    """``full['on'] = True`` makes every fsync and rename fail with ENOSPC
    (the journal writes some entries without fsync, but renames them all
    into place; rename(2) fails with ENOSPC when the directory cannot
    grow).
    """
    full = {'on': False}

    def failing(real):
        def call(*args):
            if full['on']:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(*args)
        return call

    monkeypatch.setattr(os, 'fsync', failing(os.fsync))
    monkeypatch.setattr(os, 'replace', failing(os.replace))
    return full


def test_agent_that_cannot_journal_refuses_work(runner, disk_full):
    disk_full['on'] = True
    runner.run({}, 'create_snapshot', _task())
    assert runner.driver.creates == 0
    (op_id, report), = runner.conductor_api.reports
    assert report['status'] == 'failed'
    assert report['error_code'] == 'journal_unavailable'
    assert 'No space left on device' in report['error']
    # The conductor asking gets the same answer, and it is re-sent
    # until acknowledged, from memory.
    assert runner.operation_state('op-1') == {'state': 'done',
                                              'report': report}
    time.sleep(0.05)
    assert runner.resend_due({}) == 1
    runner.acknowledge('op-1')
    time.sleep(0.05)
    assert runner.resend_due({}) == 0
    # Space again: the outcome is journaled, acknowledged, archived.
    disk_full['on'] = False
    runner.resend_due({})
    assert runner._outcomes == {}
    assert runner.journal.get('op-1')['acked_at']
    assert runner.journal.entries() == []


def test_outcome_known_but_not_journaled_is_reported(runner, disk_full):
    """The work is done when the disk fills: the real outcome is reported,
    not "in progress" for ever, and not a made-up failure.
    """
    runner.driver.record_steps = False
    runner.driver.hook = lambda: disk_full.update(on=True)
    runner.run({}, 'create_snapshot', _task())
    assert _statuses(runner) == [('op-1', 'succeeded')]
    assert runner.journal.get('op-1')['state'] == 'running'
    assert runner.operation_state('op-1')['state'] == 'done'
    _wait_reruns()
    assert runner.driver.creates == 1
    # Once the disk has room, the journal catches up.
    disk_full['on'] = False
    runner.resend_due({}, force=True)
    assert runner.journal.get('op-1')['state'] == 'done'
    assert [e['operation_id'] for e in runner.journal.unacknowledged()] == [
        'op-1']


def test_journal_write_failing_mid_operation_says_so(runner, disk_full):
    runner.driver.hook = None
    calls = {'n': 0}
    real_record = runner.journal.record

    def record(op_id, **fields):
        calls['n'] += 1
        if calls['n'] == 2:  # the step written ahead of 'prepare'
            disk_full['on'] = True
        return real_record(op_id, **fields)

    runner.journal.record = record
    runner.run({}, 'create_snapshot', _task())
    (op_id, report), = runner.conductor_api.reports
    assert report['status'] == 'failed'
    assert report['error_code'] == 'journal_unavailable'


def _run_that_dies(self, ctxt, action, task, operation_id, expires_at,
                   recovering):
    """``TaskRunner._run`` that journals the start, then dies of an
    unexpected error.
    """
    self.journal.record(operation_id, action=action, task=task,
                        state='running', host=self.host, paused=False)
    raise SystemError('the task thread died')


def test_task_that_died_is_noticed_without_being_asked(runner, monkeypatch):
    """A task ends on an unexpected error with the journal at running;
    the agent's own periodic check runs it again.
    """
    monkeypatch.setattr(task_runner.TaskRunner, '_run', _run_that_dies)
    with pytest.raises(SystemError):
        runner.run({}, 'create_snapshot', _task())
    assert runner.journal.get('op-1')['state'] == 'running'
    assert runner.conductor_api.reports == []
    monkeypatch.undo()
    assert runner.rerun_dead() == 1
    _wait_reruns()
    assert _statuses(runner) == [('op-1', 'succeeded')]
    assert runner.rerun_dead() == 0
