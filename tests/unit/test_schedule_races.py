"""Exactly once with several conductors: threads race to claim the same
due slot of a policy, and the same attempt of a run, each on its own
database connection, on PostgreSQL and MariaDB.  A barrier holds every
thread just before its compare-and-set, so they really race."""

import datetime
import threading

import pytest

from conductor.db import api as db
from conductor.db import models
from conductor import schedule_runner
from conductor import slots

SERVERS = pytest.mark.parametrize('database', ['postgresql', 'mariadb'],
                                  indirect=True)
RACERS = 4
ROUNDS = 5


def _world():
    now = schedule_runner.utcnow_seconds()
    with db.transaction() as s:
        s.add(models.Server(id='srv1', name='srv1', project_id='p1',
                            host='hv1'))
        for name in ('vda', 'vdb'):
            s.add(models.Disk(id='disk-' + name, server_id='srv1', name=name,
                              active_image='/images/%s.qcow2' % name))
        s.add(models.SnapshotPolicy(
            id='pol1', project_id='p1', server_id='srv1', name='often',
            interval=3600, timezone='UTC', keep_last=1, keep_hourly=0,
            keep_daily=0, keep_weekly=0, keep_monthly=0, keep_yearly=0,
            enabled=True, created_at=now - datetime.timedelta(hours=10),
            next_run=now))
    return now


def _race(target, args_list):
    """Run ``target(*args)`` in one thread per args, all at once."""
    results, errors = [None] * len(args_list), []

    def run(i, args):
        try:
            results[i] = target(*args)
        except Exception as exc:   # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a))
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


@SERVERS
def test_a_slot_is_claimed_exactly_once(database, monkeypatch):
    now = _world()
    real = slots.next_for
    barrier = threading.Barrier(RACERS, timeout=30)

    def held(policy, after):
        barrier.wait()   # every racer has read the same due slot
        return real(policy, after)

    monkeypatch.setattr(slots, 'next_for', held)
    for round_ in range(ROUNDS):
        slot = now + datetime.timedelta(hours=round_)
        with db.transaction() as s:
            s.get(models.SnapshotPolicy, 'pol1').next_run = slot
        claimed = _race(schedule_runner.claim_due,
                        [(slot + datetime.timedelta(seconds=1),)] * RACERS)
        assert sorted(claimed) == [0] * (RACERS - 1) + [1], claimed
        with db.transaction() as s:
            runs = s.query(models.PolicyRun).filter_by(
                scheduled_for=slot).all()
            assert sorted(r.disk_name for r in runs) == ['vda', 'vdb']
            assert s.get(models.SnapshotPolicy, 'pol1').last_run == slot
        barrier.reset()


@SERVERS
def test_an_attempt_is_made_exactly_once(database, monkeypatch):
    now = _world()
    assert schedule_runner.claim_due(now) == 1
    made = []
    lock = threading.Lock()

    def fake_create(ctxt, server_id, disk_name, name, project_id=None,
                    requested_by=None):
        with lock:
            made.append(disk_name)
        return 'snap-' + disk_name, 'op-' + disk_name, None

    monkeypatch.setattr(schedule_runner.creation, 'create', fake_create)
    real = schedule_runner._claim_attempt
    barrier = threading.Barrier(RACERS, timeout=30)

    def held(run_id, attempts, when):
        barrier.wait()   # every racer read the same attempt count
        return real(run_id, attempts, when)

    monkeypatch.setattr(schedule_runner, '_claim_attempt', held)
    results = _race(schedule_runner.start_pending, [(now,)] * RACERS)
    assert sorted(made) == ['vda', 'vdb'], made
    assert sum(results) == 2
    with db.transaction() as s:
        runs = s.query(models.PolicyRun).all()
        assert {(r.disk_name, r.outcome, r.attempts, r.snapshot_id)
                for r in runs} == {('vda', 'created', 1, 'snap-vda'),
                                   ('vdb', 'created', 1, 'snap-vdb')}
