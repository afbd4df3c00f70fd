"""The conductor's side of recovery, on SQLite and PostgreSQL, with a
scripted agent: reports acknowledged once committed, operations in flight
reconciled at start, abandonment recorded through the agent first."""

import datetime

import pytest

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models
from conductor import deadlines
from conductor import dispatch
from conductor import manager
from livesnap import rpc


class ScriptedAgent(object):
    """Stands in for AgentAPI: answers from ``answers[op_id]`` (a dict, or
    an exception to raise) and records every call.
    """

    answers = {}
    abandon_answers = {}
    calls = []

    def __init__(self, *args, **kwargs):
        pass

    def _answer(self, table, op_id):
        answer = table.get(op_id)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get_operation(self, ctxt, host, operation_id, timeout=10):
        self.calls.append(('get_operation', host, operation_id))
        return self._answer(self.answers, operation_id)

    def abandon_operation(self, ctxt, host, operation_id, timeout=10):
        self.calls.append(('abandon_operation', host, operation_id))
        return self._answer(self.abandon_answers, operation_id)

    def ack_report(self, ctxt, host, operation_id):
        self.calls.append(('ack_report', host, operation_id))

    def create_snapshot(self, ctxt, host, task, expires_at=None):
        self.calls.append(('create_snapshot', host, task['operation_id']))


@pytest.fixture
def agent(monkeypatch):
    ScriptedAgent.answers = {}
    ScriptedAgent.abandon_answers = {}
    ScriptedAgent.calls = []
    monkeypatch.setattr(agent_rpcapi, 'AgentAPI', ScriptedAgent)
    return ScriptedAgent


def _op(op_id, host='h1', status='running', attempts=0, overdue=False,
        in_doubt=False):
    """A create on its own server and disk, holding the disk's lock."""
    with db.transaction() as s:
        if s.get(models.Host, host) is None:
            s.add(models.Host(name=host, last_heartbeat=models.utcnow()))
        s.add(models.Server(id='srv-' + op_id, name='s', project_id='p1',
                            host=host))
        s.add(models.Disk(id='disk-' + op_id, server_id='srv-' + op_id,
                          name='vda', active_image='/i/a.qcow2',
                          operation_id=op_id))
        s.add(models.Snapshot(id='snap-' + op_id, disk_id='disk-' + op_id,
                              project_id='p1', name='n', status='creating',
                              image='/i/a.qcow2'))
        deadline = models.utcnow() + datetime.timedelta(
            seconds=-5 if overdue else 600)
        s.add(models.Operation(
            id=op_id, project_id='p1', server_id='srv-' + op_id,
            disk_id='disk-' + op_id, snapshot_id='snap-' + op_id, host=host,
            action='create', status='failed' if in_doubt else status,
            task={'operation_id': op_id, 'layer_name': 'b',
                  'disk': {'driver': 'qemu', 'qmp_socket': None,
                           'path': '/i/a.qcow2'}},
            steps=[], attempts=attempts, requested_by='tenant',
            deadline=deadline))


def _state(op_id):
    with db.transaction() as s:
        op = s.get(models.Operation, op_id)
        disk = s.get(models.Disk, 'disk-' + op_id)
        return op.status, disk.operation_id, op.error


def _row(op_id):
    """What a report changes: the operation, its snapshot, its disk."""
    with db.transaction() as s:
        op = s.get(models.Operation, op_id)
        snap = s.get(models.Snapshot, 'snap-' + op_id)
        disk = s.get(models.Disk, 'disk-' + op_id)
        return (op.status, op.steps, op.pause_ms, op.error, snap.status,
                disk.active_image, disk.snapshot_id, disk.operation_id)


REPORT = {'status': 'succeeded', 'pause_ms': 1.0,
          'steps': [{'name': 'pivot', 'started_at': 1.0,
                     'duration_ms': 1.0, 'status': 'done'}],
          'result': {'snapshot': {'driver': 'qemu', 'path': '/i/a.qcow2'},
                     'disk': {'driver': 'qemu', 'qmp_socket': None,
                              'path': '/i/b.qcow2'},
                     'size_bytes': 1}}


def test_report_is_acknowledged_once_committed(database, agent):
    _op('op1')
    mgr = manager.ConductorManager()
    mgr.report_operation({}, 'op1', REPORT, host='h1')
    assert _state('op1')[:2] == ('succeeded', None)
    assert agent.calls == [('ack_report', 'h1', 'op1')]
    before = _row('op1')
    # Again (the agent re-sent it): nothing changes, acknowledged again.
    mgr.report_operation({}, 'op1', dict(REPORT, pause_ms=99.0),
                         host='h1')
    assert agent.calls[-1] == ('ack_report', 'h1', 'op1')
    assert _row('op1') == before
    # An unknown operation is acknowledged too: nothing left to apply.
    mgr.report_operation({}, 'nope', REPORT, host='h1')
    assert agent.calls[-1] == ('ack_report', 'h1', 'nope')
    # An agent speaking RPC 1.0 sends no host and gets no acknowledgement.
    del agent.calls[:]
    mgr.report_operation({}, 'op1', REPORT)
    assert agent.calls == []


def test_report_not_committed_is_not_acknowledged(database, agent,
                                                  monkeypatch):
    _op('op1')

    def database_down(*args, **kwargs):
        raise RuntimeError('database unreachable')

    monkeypatch.setattr(dispatch, 'apply_report', database_down)
    with pytest.raises(RuntimeError):
        manager.ConductorManager().report_operation({}, 'op1', REPORT,
                                                    host='h1')
    assert agent.calls == []


def test_conductor_start_reconciles_operations_in_flight(database, agent):
    _op('done')          # its report was lost with a dead conductor
    _op('busy')          # a long merge
    _op('unsent', status='pending')   # never sent: its conductor died
    _op('doubt', in_doubt=True)       # given up while its agent was down
    _op('quiet1', host='h2')          # a host that does not answer
    _op('quiet2', host='h2')
    agent.answers = {'done': {'state': 'done', 'report': REPORT},
                     'busy': {'state': 'running', 'report': None},
                     'unsent': None, 'doubt': None,
                     'quiet1': rpc.messaging.MessagingTimeout('no'),
                     'quiet2': rpc.messaging.MessagingTimeout('no')}
    agent.abandon_answers = {'doubt': {'state': 'abandoned',
                                       'report': None}}

    outcomes = deadlines.reconcile_in_flight()

    assert _state('done')[:2] == ('succeeded', None)
    assert ('ack_report', 'h1', 'done') in agent.calls
    assert _state('busy')[:2] == ('running', 'busy')
    assert ('create_snapshot', 'h1', 'unsent') in agent.calls
    assert _state('unsent')[1] == 'unsent'
    # The abandonment is recorded by the agent before the disk is freed.
    assert ('abandon_operation', 'h1', 'doubt') in agent.calls
    status, lock, error = _state('doubt')
    assert (status, lock) == ('failed', None) and 'never reached' in error
    # A silent host is asked once, and its operations keep their locks.
    assert [c for c in agent.calls if c[1] == 'h2'] == [
        ('get_operation', 'h2', 'quiet1')]
    assert _state('quiet1')[:2] == ('running', 'quiet1')
    assert outcomes == {'applied': 1, 'running': 1, 'resent': 1,
                        'failed': 1, 'no-answer': 1}


def test_give_up_records_the_abandonment_through_the_agent(database, agent):
    _op('lost', overdue=True, attempts=5)
    _op('late', overdue=True, attempts=5)
    _op('mute', overdue=True, attempts=5)
    agent.answers = {'lost': None, 'late': None, 'mute': None}
    agent.abandon_answers = {
        'lost': {'state': 'abandoned', 'report': None},
        # The task arrived just before the abandonment: its report wins.
        'late': {'state': 'done', 'report': REPORT},
        'mute': rpc.messaging.MessagingTimeout('no')}

    assert deadlines.check_overdue() == 3

    assert _state('lost')[:2] == ('failed', None)
    assert _state('late')[:2] == ('succeeded', None)
    assert ('ack_report', 'h1', 'late') in agent.calls
    # The agent could not record it: in doubt, the disk stays locked.
    status, lock, error = _state('mute')
    assert (status, lock) == ('failed', 'mute') and 'does not answer' in error


def test_in_doubt_operation_of_a_down_host_is_not_asked(database, agent):
    _op('doubt', in_doubt=True, overdue=True)
    with db.transaction() as s:
        s.get(models.Host, 'h1').last_heartbeat = models.utcnow().replace(
            year=2000)
    assert deadlines.check_one('doubt') == 'host-down'
    assert agent.calls == []
    assert _state('doubt')[:2] == ('failed', 'doubt')


def test_reports_of_every_action_apply_whatever_was_imported():
    """The report handlers are an explicit table, not registered by the
    side effect of importing a policy module: a process that imported
    only the report handling (``conductor.reports``, what the RPC manager
    calls) finds the revert handler.
    """
    import subprocess
    import sys
    code = ('import sys; from conductor import reports; '
            'actions = sys.modules["conductor.actions"]; '
            'ok, failed = actions.report_handlers("revert"); '
            'print(ok.__module__, ok.__name__, failed.__name__)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ['conductor.revert', 'apply_reverted',
                   'apply_revert_failure']


def test_first_check_resends_a_lost_task_and_waits_for_a_silent_agent(
        database, agent, conf):
    """The first deadline comes task_receipt_timeout after the task is
    sent: a task the agent never got is sent again then; an agent that does
    not answer that early is asked again later, not given up on, until
    operation_timeout has passed since the operation began.
    """
    conf.set('task_receipt_timeout', 15, group='conductor')
    conf.set('operation_timeout', 600, group='conductor')
    _op('lost', overdue=True)
    _op('silent', host='h2', overdue=True)
    _op('old', host='h3', overdue=True)
    with db.transaction() as s:
        s.get(models.Operation, 'old').created_at = (
            models.utcnow() - datetime.timedelta(seconds=700))
    agent.answers = {'lost': None,
                     'silent': rpc.messaging.MessagingTimeout('no'),
                     'old': rpc.messaging.MessagingTimeout('no')}
    deadlines.check_overdue()
    assert ('create_snapshot', 'h1', 'lost') in agent.calls
    with db.transaction() as s:
        lost = s.get(models.Operation, 'lost')
        silent = s.get(models.Operation, 'silent')
        soon = models.utcnow() + datetime.timedelta(seconds=16)
        assert (lost.status, lost.attempts) == ('running', 1)
        assert lost.deadline < soon
        assert silent.status == 'running' and silent.deadline < soon
    assert _state('old')[:2] == ('failed', 'old')   # in doubt, still locked


def test_a_task_expires_operation_timeout_after_it_is_sent(database, conf):
    conf.set('task_receipt_timeout', 15, group='conductor')
    conf.set('operation_timeout', 600, group='conductor')
    _op('t1')
    with db.transaction() as s:
        op = s.get(models.Operation, 't1')
        expires = dispatch._expires_at(op)
    import time
    assert 590 < expires - time.time() < 610
