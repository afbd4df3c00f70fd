"""Races between requests, reports and the conductor's own work, made
deterministic by holding one side at a chosen point.  Conductor and agent
in-process (real qemu-img on offline disks), on SQLite, PostgreSQL and
MariaDB."""

import threading
import time

import pytest
import sqlalchemy as sa

from conductor import actions
from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import dispatch
from conductor import operations
from conductor import states
from livesnap_tools import fixtures
from tests.functional import scenarios
from tests.unit import test_api

#: test_api's fixture, bound by assignment: the tests' argument of the same
#: name then does not redefine an import (flake8 F811).
offline = test_api.offline


def test_state_machine():
    assert states.operation_may('pending', 'running')
    assert states.operation_may('running', 'succeeded')
    assert states.operation_may('failed', 'succeeded')  # in doubt
    assert not states.operation_may('succeeded', 'running')
    assert not states.operation_may('succeeded', 'failed')
    assert not states.operation_may('failed', 'running')
    snap = models.Snapshot(id='s', status='available')
    states.check_snapshot(snap, 'deleting')
    with pytest.raises(states.InvalidTransition):
        states.check_snapshot(snap, 'creating')


def test_compare_and_set(offline):
    dep, _ = offline
    _, op = scenarios.create_snapshot(dep, 'srv1', 'a')
    with db.transaction() as s:
        # Not in the expected status: nothing changes.
        assert not db.operation_transition(s, op['id'], ['running'],
                                           'failed')
    with pytest.raises(states.InvalidTransition):
        with db.transaction() as s:
            db.operation_transition(s, op['id'], ['succeeded'], 'running')
    # A late duplicate or progress report never regresses it.
    assert not dispatch.apply_report(op['id'], {'status': 'failed'})
    operations.apply_progress(op['id'], 3.0)
    after = dep.ok('GET', '/v1/operations/%s' % op['id'])['operation']
    assert after['status'] == 'succeeded' and after['progress'] != 3.0


def test_running_before_the_task_is_cast(offline, monkeypatch):
    """A fast agent's report can only follow a recorded ``running``."""
    dep, _ = offline
    real = dispatch.send_task
    seen = []

    def send(ctxt, op):
        with db.transaction() as s:
            seen.append(s.get(models.Operation, op.id).status)
        real(ctxt, op)
        # The report may be applied before dispatch() returns.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.transaction() as s:
                if s.get(models.Operation, op.id).status == 'succeeded':
                    break
            time.sleep(0.01)

    monkeypatch.setattr(dispatch, 'send_task', send)
    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 'a', 'disk': 'vda'}}, status=202)
    assert seen == ['running']
    # The report came before dispatch() returned, and stands.
    assert body['operation']['status'] == 'succeeded'
    op = dep.wait_operation(body['operation']['id'])
    assert op['status'] == 'succeeded'


def test_delete_during_create_report_counts_fresh_rows(offline,
                                                        monkeypatch):
    """A delete that arrives while the create of its child is being
    recorded is decided on the rows that create leaves: one child, merge
    (the bug: the stale live-image position added a second child and the
    snapshot was deleted logically).
    """
    dep, _ = offline
    s1, op = scenarios.create_snapshot(dep, 'srv1', 's1')
    assert op['status'] == 'succeeded'
    on_success, on_failure = actions.report_handlers('create')
    held, release = threading.Event(), threading.Event()

    def slow_created(session, op, result):
        on_success(session, op, result)
        if op.snapshot_id != s1:
            session.flush()   # the disk's row is now locked by the report
            held.set()
            release.wait(30)

    monkeypatch.setattr(creation, 'apply_created', slow_created)
    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 's2', 'disk': 'vda'}}, status=202)
    assert held.wait(30)
    answers = []
    deleter = threading.Thread(target=lambda: answers.append(dep.api(
        'DELETE', '/v1/snapshots/%s' % s1)))
    deleter.start()
    time.sleep(0.5)   # let the delete read and wait for the disk's row
    release.set()
    deleter.join(60)
    assert dep.wait_operation(body['operation']['id'])[
        'status'] == 'succeeded'
    status, payload = answers[0]
    if status == 409:   # it came before the create's report: retry
        assert payload['error']['code'] == 'disk_busy'
        payload = dep.ok('DELETE', '/v1/snapshots/%s' % s1, status=202)
    assert payload['operation']['mode'] == 'merge', payload
    assert dep.wait_operation(payload['operation']['id'])[
        'status'] == 'succeeded'


class HoldConductorWork(object):
    """Hold the conductor's own tasks (deferred deletions) until released,
    so a tenant's request finds its disk busy with them.
    """

    def __init__(self, monkeypatch):
        self.real = dispatch.send_task
        self.held = []
        self.hold = True
        monkeypatch.setattr(dispatch, 'send_task', self.send)

    def send(self, ctxt, op):
        if self.hold and op.requested_by == 'conductor':
            self.held.append((ctxt, op))
            return
        self.real(ctxt, op)

    def release(self):
        self.hold = False
        for ctxt, op in self.held:
            self.real(ctxt, op)
        self.held = []


def _make_deferred(dep):
    """s1 with two children (s2 and the live image after a revert),
    deleted logically; then s2 deleted, so the conductor starts merging
    s1 into the live image by itself.
    """
    s1, _ = scenarios.create_snapshot(dep, 'srv1', 's1')
    s2, _ = scenarios.create_snapshot(dep, 'srv1', 's2')
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % s1,
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s1, status=202)['operation']
    assert op['mode'] == 'logical' and op['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s2, status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    return s1


def _conductor_ops(s1, wait=True):
    """The conductor's own operations on ``s1`` (waiting for the first:
    it starts after the report that freed the disk is committed).
    """
    deadline = time.monotonic() + 30
    while True:
        with db.transaction() as s:
            ops = [(o.status, o.mode) for o in s.scalars(
                sa.select(models.Operation).where(
                    models.Operation.snapshot_id == s1,
                    models.Operation.requested_by == 'conductor'))]
        if ops or not wait or time.monotonic() > deadline:
            return ops
        time.sleep(0.02)


def test_tenant_waits_for_conductor_work(offline, monkeypatch):
    """A tenant's create and delete that find the disk busy with the
    conductor's deferred deletion are accepted as pending and run after
    it, decided then; a second request meanwhile is refused for the
    tenant's own waiting operation.
    """
    dep, _ = offline
    hold = HoldConductorWork(monkeypatch)
    s1 = _make_deferred(dep)
    assert _conductor_ops(s1) == [('running', 'merge')]

    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 's3', 'disk': 'vda'}}, status=202)
    assert body['operation']['status'] == 'pending'
    assert body['snapshot']['status'] == 'creating'
    status, code = fixtures.api_error(dep, 'DELETE', '/v1/snapshots/%s'
                                      % body['snapshot']['id'])
    assert (status, code) == (409, 'disk_busy')
    status, err = dep.api('POST', '/v1/servers/srv1/snapshots',
                          {'snapshot': {'name': 'x', 'disk': 'vda'}})
    assert status == 409 and err['error']['code'] == 'disk_busy'
    assert body['operation']['id'] in err['error']['message']

    hold.release()
    op = dep.wait_operation(body['operation']['id'])
    assert op['status'] == 'succeeded', op
    assert _conductor_ops(s1) == [('succeeded', 'merge')]
    s3 = dep.ok('GET', '/v1/snapshots/%s' % body['snapshot']['id'])[
        'snapshot']
    # s1 was merged into the live image first: s3 is the new root.
    assert s3['parent_id'] is None and s3['current'] is True

    # A waiting delete: no mode until it starts, then the count is made.
    hold.hold = True
    s4, _ = scenarios.create_snapshot(dep, 'srv1', 's4')
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % s3['id'],
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s3['id'],
                status=202)['operation']
    assert op['mode'] == 'logical'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s4, status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    assert _conductor_ops(s3['id']) == [('running', 'merge')]
    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 's5', 'disk': 'vda'}}, status=202)
    assert body['operation']['status'] == 'pending'
    hold.release()
    assert dep.wait_operation(body['operation']['id'])[
        'status'] == 'succeeded'
    s5 = body['snapshot']['id']
    assert _conductor_ops(s3['id']) == [('succeeded', 'merge')]

    # Once more with a delete waiting.
    hold.hold = True
    s6, _ = scenarios.create_snapshot(dep, 'srv1', 's6')
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % s5,
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s5, status=202)['operation']
    assert op['mode'] == 'logical'
    s7, _ = scenarios.create_snapshot(dep, 'srv1', 's7')
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s6, status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    # s5 has one child left, s7: the conductor merges s5 into it.
    assert _conductor_ops(s5) == [('running', 'merge')]
    op = dep.ok('DELETE', '/v1/snapshots/%s' % s7, status=202)['operation']
    assert op['status'] == 'pending' and op['mode'] is None
    assert dep.ok('GET', '/v1/snapshots/%s' % s7)['snapshot'][
        'status'] == 'deleting'
    hold.release()
    op = dep.wait_operation(op['id'])
    assert op['status'] == 'succeeded' and op['mode'] == 'merge', op
    assert dep.ok('GET', '/v1/servers/srv1/snapshots')['snapshots'] == []
    assert dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
        'busy'] is False


def test_waiting_operation_refused_when_it_can_start(offline, monkeypatch,
                                                     conf):
    """A waiting create that would exceed the quota when it starts ends
    failed with the reason; its snapshot is an error.
    """
    dep, _ = offline
    hold = HoldConductorWork(monkeypatch)
    s1 = _make_deferred(dep)
    assert _conductor_ops(s1) == [('running', 'merge')]
    body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                  {'snapshot': {'name': 's3', 'disk': 'vda'}}, status=202)
    conf.set('snapshot_quota', 0, group='conductor')
    hold.release()
    op = dep.wait_operation(body['operation']['id'])
    assert op['status'] == 'failed'
    assert op['error'].startswith('quota_exceeded'), op
    assert dep.ok('GET', '/v1/snapshots/%s' % body['snapshot']['id'])[
        'snapshot']['status'] == 'error'


def test_quota_holds_across_disks(offline, conf):
    """Two creates of one project on two disks at once cannot both take
    its last unit of quota (the project's rows are locked to decide).
    """
    import os

    from agent import images
    from conductor import creation
    from conductor import exception
    from livesnap import context
    dep, _ = offline
    base2 = os.path.join(dep.image_dir, 'srv2-vda.qcow2')
    images.create_base(base2, 16 * scenarios.MiB)
    dep.register_server('srv2', base2)
    conf.set('snapshot_quota', 1, group='conductor')
    barrier = threading.Barrier(2)
    results = []

    def create(server_id):
        barrier.wait()
        try:
            ctxt = context.make()
            snapshot_id, operation_id, sent = creation.create(
                ctxt, server_id, 'vda', 'q', project_id='p1')
            dispatch.send(ctxt, sent)
            results.append((snapshot_id, operation_id))
        except exception.QuotaExceeded:
            results.append('quota')

    threads = [threading.Thread(target=create, args=(x,))
               for x in ('srv1', 'srv2')]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(map(str, results))[-1] == 'quota', results
    assert len([r for r in results if r != 'quota']) == 1
