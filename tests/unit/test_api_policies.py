"""Snapshot policies through the REST API and the scheduler: CRUD and its
checks, runs, retry and skip, pruning (never a manual or a protected
snapshot), and protected snapshots.  Conductor and agent in-process (real
qemu-img on offline disks); the periodic task is called by the test."""

import datetime
import os
import time

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from conductor import schedule_runner
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error
SQLITE = pytest.mark.parametrize('database', ['sqlite'], indirect=True)


@pytest.fixture
def dep(conf, tmp_path, database):
    """In-process deployment whose own periodic task stays out of the way,
    with an offline server 'srv1' of project p1 (disk vda).
    """
    conf.set('periodic_interval', 3600, group='conductor')
    conf.set('policy_min_interval', 1, group='conductor')
    deployment = fixtures.InProcessDeployment(conf, tmp_path)
    deployment.start()
    base = os.path.join(deployment.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 16 * scenarios.MiB)
    deployment.register_server('srv1', base)
    yield deployment
    deployment.stop()


def _policy(dep, token='p1-token', **fields):
    spec = {'name': 'hourly', 'server_id': 'srv1', 'interval': 3600,
            'retention': {'keep_last': 2}}
    spec.update(fields)
    spec = {k: v for k, v in spec.items() if v is not None}
    return dep.ok('POST', '/v1/policies', {'policy': spec}, token=token,
                  status=201)['policy']


def _make_due(policy_id, ago=1):
    with db.transaction() as s:
        p = s.get(models.SnapshotPolicy, policy_id)
        p.next_run = (schedule_runner.utcnow_seconds()
                      - datetime.timedelta(seconds=ago))


def _settle(dep, timeout=60):
    """Run the periodic task until nothing of the policies is under way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        schedule_runner.run_periodic()
        with db.transaction() as s:
            busy = s.query(models.Operation).filter(
                models.Operation.status.in_(('pending', 'running'))).count()
            open_runs = s.query(models.PolicyRun).filter(
                (models.PolicyRun.outcome == 'pending')
                | models.PolicyRun.prune_status.in_(('waiting', 'pending'))
            ).count()
        if not busy and not open_runs:
            return
        time.sleep(0.1)
    raise AssertionError('policy work still under way after %ss' % timeout)


def _runs(dep, policy_id, token='p1-token'):
    return dep.ok('GET', '/v1/policies/%s/runs' % policy_id,
                  token=token)['runs']


def _snapshots(dep):
    return dep.ok('GET', '/v1/servers/srv1/snapshots')['snapshots']


# ------------------------------------------------------------------ CRUD

@SQLITE
def test_crud(dep):
    p = _policy(dep, cron='0 2 * * *', interval=None,
                timezone='Europe/Paris', disks=['vda'])
    assert p['cron'] == '0 2 * * *' and p['interval'] is None
    assert p['timezone'] == 'Europe/Paris' and p['disks'] == ['vda']
    assert p['retention'] == {'keep_last': 2, 'keep_hourly': 0,
                              'keep_daily': 0, 'keep_weekly': 0,
                              'keep_monthly': 0, 'keep_yearly': 0}
    assert p['enabled'] and p['next_run'] and p['last_run'] is None
    assert p['last_outcome'] is None
    # 02:00 in Paris is 00:00 or 01:00 UTC.
    assert p['next_run'][11:19] in ('00:00:00', '01:00:00')
    assert dep.ok('GET', '/v1/policies/%s' % p['id'])['policy'] == p
    assert dep.ok('GET', '/v1/policies')['policies'] == [p]
    assert dep.ok('GET', '/v1/policies?server_id=srv1')['policies'] == [p]
    assert dep.ok('GET', '/v1/policies?server_id=other')['policies'] == []

    off = dep.ok('PATCH', '/v1/policies/%s' % p['id'],
                 {'policy': {'enabled': False}})['policy']
    assert off['enabled'] is False and off['next_run'] is None
    on = dep.ok('PATCH', '/v1/policies/%s' % p['id'],
                {'policy': {'enabled': True, 'interval': 600,
                            'retention': {'keep_daily': 7}}})['policy']
    assert on['next_run'] and on['interval'] == 600 and on['cron'] is None
    assert on['retention']['keep_daily'] == 7
    assert on['retention']['keep_last'] == 0

    gone = dep.ok('DELETE', '/v1/policies/%s' % p['id'])['policy']
    assert gone['id'] == p['id']
    assert _err(dep, 'GET', '/v1/policies/%s' % p['id']) == (
        404, 'not_found')
    assert dep.ok('GET', '/v1/policies')['policies'] == []


@SQLITE
def test_projects_are_isolated(dep):
    p = _policy(dep)
    for method, path in (('GET', '/v1/policies/%s' % p['id']),
                         ('GET', '/v1/policies/%s/runs' % p['id']),
                         ('DELETE', '/v1/policies/%s' % p['id'])):
        assert _err(dep, method, path, token='p2-token') == (
            404, 'not_found')
    assert _err(dep, 'PATCH', '/v1/policies/%s' % p['id'],
                {'policy': {'enabled': False}}, token='p2-token') == (
        404, 'not_found')
    assert dep.ok('GET', '/v1/policies', token='p2-token') == {
        'policies': []}
    # Another project's server is not found either.
    assert _err(dep, 'POST', '/v1/policies', {'policy': {
        'name': 'x', 'server_id': 'srv1', 'interval': 3600,
        'retention': {}}}, token='p2-token') == (404, 'not_found')
    assert [x['id'] for x in dep.ok('GET', '/v1/policies',
                                    token='admin-token')['policies']] == [
        p['id']]


@SQLITE
@pytest.mark.parametrize('spec', [
    {'name': 'x', 'server_id': 'srv1', 'retention': {}},      # no schedule
    {'name': 'x', 'server_id': 'srv1', 'interval': 60, 'cron': '0 * * * *',
     'retention': {}},                                        # both
    {'name': 'x', 'server_id': 'srv1', 'interval': 60},       # no retention
    {'name': 'x', 'server_id': 'srv1', 'interval': 0, 'retention': {}},
    {'name': 'x', 'server_id': 'srv1', 'interval': 60,
     'retention': {'keep_forever': 1}},
    {'name': 'x', 'server_id': 'srv1', 'interval': 60,
     'retention': {'keep_last': -1}},
    {'name': 'x', 'server_id': 'srv1', 'cron': 'every day at noon',
     'retention': {}},
    {'name': 'x', 'server_id': 'srv1', 'cron': '0 2 * * *',
     'timezone': 'Mars/Olympus', 'retention': {}},
    {'name': 'x', 'server_id': 'srv1', 'cron': '0 99 * * *',
     'retention': {}},
    {'name': 'x', 'server_id': 'srv1', 'interval': 60, 'disks': ['vdz'],
     'retention': {}},
    {'name': 'x', 'server_id': 'srv1', 'interval': 60, 'disks': [],
     'retention': {}},
])
def test_invalid_policies(dep, spec):
    assert _err(dep, 'POST', '/v1/policies', {'policy': spec}) == (
        400, 'bad_request')


@SQLITE
def test_interval_minimum_and_quota(dep, conf):
    conf.set('policy_min_interval', 300, group='conductor')
    assert _err(dep, 'POST', '/v1/policies', {'policy': {
        'name': 'x', 'server_id': 'srv1', 'interval': 299,
        'retention': {}}}) == (400, 'bad_request')
    conf.set('policy_quota', 1, group='conductor')
    _policy(dep)
    assert _err(dep, 'POST', '/v1/policies', {'policy': {
        'name': 'y', 'server_id': 'srv1', 'interval': 3600,
        'retention': {}}}) == (403, 'quota_exceeded')


# ------------------------------------------------------------- protected

@SQLITE
def test_protected_snapshot_cannot_be_deleted(dep):
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'keep-me')
    assert op['status'] == 'succeeded'
    snap = dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot']
    assert snap['protected'] is False and snap['policy_id'] is None
    snap = dep.ok('PATCH', '/v1/snapshots/%s' % snap_id,
                  {'snapshot': {'protected': True}})['snapshot']
    assert snap['protected'] is True
    assert _err(dep, 'DELETE', '/v1/snapshots/%s' % snap_id) == (
        409, 'snapshot_protected')
    assert [s['protected'] for s in _snapshots(dep)] == [True]
    assert _err(dep, 'PATCH', '/v1/snapshots/%s' % snap_id,
                {'snapshot': {'protected': True}}, token='p2-token') == (
        404, 'not_found')
    assert _err(dep, 'PATCH', '/v1/snapshots/%s' % snap_id,
                {'snapshot': {'protected': 'yes'}}) == (400, 'bad_request')
    dep.ok('PATCH', '/v1/snapshots/%s' % snap_id,
           {'snapshot': {'protected': False}})
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'


# ------------------------------------------------------------ scheduling

def test_runs_prune_but_never_manual_or_protected(dep):
    """keep_last 2: after five runs two of the policy's snapshots are
    left, plus the one the tenant protected; the manual one stays.
    """
    manual, _ = scenarios.create_snapshot(dep, 'srv1', 'manual')
    p = _policy(dep, retention={'keep_last': 2})
    made = []
    for i in range(5):
        _make_due(p['id'])
        _settle(dep)
        runs = _runs(dep, p['id'])
        assert runs[0]['outcome'] == 'created', runs[0]
        made.append(runs[0]['snapshot_id'])
        if i == 0:
            dep.ok('PATCH', '/v1/snapshots/%s' % made[0],
                   {'snapshot': {'protected': True}})
        time.sleep(1.1)   # MariaDB keeps whole seconds: order the runs
    left = {s['id']: s for s in _snapshots(dep)}
    assert manual in left and left[manual]['policy_id'] is None
    assert made[0] in left and left[made[0]]['protected']
    assert made[-1] in left
    ours = [s for s in left.values()
            if s['policy_id'] == p['id'] and not s['protected']]
    assert len(ours) == 2, left
    runs = _runs(dep, p['id'])
    assert len(runs) == 5
    assert all(r['outcome'] == 'created' and r['attempts'] == 1
               for r in runs)
    pruned = [x for r in runs for x in r['pruned_ids']]
    assert sorted(pruned) == sorted(made[1:3])
    assert manual not in pruned and made[0] not in pruned
    shown = dep.ok('GET', '/v1/policies/%s' % p['id'])['policy']
    assert shown['last_outcome'] == 'created' and shown['last_run']
    assert shown['next_run'] > shown['last_run']
    # Deleting the policy leaves its snapshots, as the tenant's own.
    dep.ok('DELETE', '/v1/policies/%s' % p['id'])
    assert all(s['policy_id'] is None for s in _snapshots(dep))


@SQLITE
def test_host_down_is_retried_then_skipped(dep, conf):
    base = os.path.join(dep.image_dir, 'ghost-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    dep.register_server('ghost1', base, host='ghost')
    p = _policy(dep, server_id='ghost1')
    _make_due(p['id'])
    schedule_runner.run_periodic()
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'pending' and run['reason_code'] == 'host_down'
    assert 'ghost' not in run['reason']
    schedule_runner.run_periodic()
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'pending' and run['attempts'] == 2
    conf.set('policy_retry_window', 0, group='conductor')
    schedule_runner.run_periodic()
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'skipped' and run['reason_code'] == 'host_down'
    assert run['snapshot_id'] is None
    assert dep.ok('GET', '/v1/policies/%s' % p['id'])['policy'][
        'last_outcome'] == 'skipped'


@SQLITE
def test_chain_too_deep_is_skipped_at_once(dep, conf):
    scenarios.create_snapshot(dep, 'srv1', 'manual')
    conf.set('max_chain_depth', 1, group='conductor')
    p = _policy(dep)
    _make_due(p['id'])
    schedule_runner.run_periodic()
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'skipped'
    assert run['reason_code'] == 'chain_too_deep' and run['attempts'] == 1


@SQLITE
def test_missed_slot_is_skipped_and_not_caught_up(dep):
    p = _policy(dep)
    _make_due(p['id'], ago=5 * 3600)
    schedule_runner.run_periodic()
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'skipped' and run['reason_code'] == 'missed'
    shown = dep.ok('GET', '/v1/policies/%s' % p['id'])['policy']
    assert shown['next_run'] > datetime.datetime.utcnow().isoformat()


@SQLITE
def test_disabled_policy_does_not_run(dep):
    p = _policy(dep)
    _make_due(p['id'])
    dep.ok('PATCH', '/v1/policies/%s' % p['id'],
           {'policy': {'enabled': False}})
    schedule_runner.run_periodic()
    assert _runs(dep, p['id']) == []


@SQLITE
def test_unrecorded_snapshot_is_adopted(dep, monkeypatch):
    """A conductor that died between making the snapshot and recording
    it: the next attempt adopts the snapshot instead of making another.
    """
    p = _policy(dep)
    _make_due(p['id'])
    real = schedule_runner._record_created
    monkeypatch.setattr(schedule_runner, '_record_created',
                        lambda *a: (_ for _ in ()).throw(SystemExit()))
    with pytest.raises(SystemExit):
        schedule_runner.run_periodic()
    monkeypatch.setattr(schedule_runner, '_record_created', real)
    with db.transaction() as s:   # the attempt's lease runs out
        run = s.query(models.PolicyRun).one()
        run.next_attempt = schedule_runner.utcnow_seconds()
    _settle(dep)
    (run,) = _runs(dep, p['id'])
    assert run['outcome'] == 'created' and run['attempts'] == 2
    assert [s['id'] for s in _snapshots(dep)] == [run['snapshot_id']]


def _remove_server(server_id):
    """Remove a server's rows behind the conductor's back (as an operator
    with foreign keys off would): its policies stay.
    """
    raw = db.get_engine().raw_connection()
    try:
        cur = raw.cursor()
        cur.execute('PRAGMA foreign_keys=OFF')
        cur.execute('DELETE FROM disks WHERE server_id = ?', (server_id,))
        cur.execute('DELETE FROM servers WHERE id = ?', (server_id,))
        cur.execute('PRAGMA foreign_keys=ON')
    finally:
        raw.close()


@SQLITE
def test_runs_of_a_server_that_is_gone_are_skipped(dep):
    base = os.path.join(dep.image_dir, 'gone1-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    dep.register_server('gone1', base, host='ghost')
    every = _policy(dep, server_id='gone1')
    some = _policy(dep, name='some', server_id='gone1', disks=['vda'])
    _make_due(every['id'])
    schedule_runner.run_periodic()
    (run,) = _runs(dep, every['id'])
    assert run['outcome'] == 'pending' and run['reason_code'] == 'host_down'
    _remove_server('gone1')
    _make_due(some['id'])
    schedule_runner.run_periodic()
    with db.transaction() as s:
        runs = {(r.policy_id, r.disk_name): r
                for r in s.query(models.PolicyRun)}
        assert set(runs) == {(every['id'], 'vda'), (some['id'], 'vda')}
        for run in runs.values():
            assert (run.outcome, run.reason_code) == ('skipped', 'not_found')
            assert 'gone' in run.reason
    _make_due(every['id'])
    schedule_runner.run_periodic()
    with db.transaction() as s:
        (run,) = s.query(models.PolicyRun).filter_by(
            policy_id=every['id'], disk_name=schedule_runner.ALL_DISKS).all()
        assert (run.outcome, run.reason_code) == ('skipped', 'not_found')
