"""Database layer on SQLite and PostgreSQL: migrations match the models,
the disk lock is a real compare-and-swap."""

import threading

from alembic import autogenerate
from alembic import migration as alembic_migration

from conductor.db import api as db
from conductor.db import models
from conductor import hosts
from conductor import locking


def _server(s, disk_id='d1'):
    s.add(models.Server(id='srv', name='srv', project_id='p1', host='h'))
    s.add(models.Disk(id=disk_id, server_id='srv', name='vda',
                      active_image='/images/a.qcow2'))


def test_migrations_match_models(database):
    with db.get_engine().connect() as conn:
        ctx = alembic_migration.MigrationContext.configure(conn)
        diff = autogenerate.compare_metadata(ctx, models.Base.metadata)
    assert diff == []


def test_disk_lock_is_exclusive(database):
    with db.transaction() as s:
        _server(s)
    with db.transaction() as s:
        assert locking.lock_disk(s, 'd1', 'op1')
    with db.transaction() as s:
        assert not locking.lock_disk(s, 'd1', 'op2')
        assert locking.lock_disk(s, 'd1', 'op1')  # re-entrant for its holder
    with db.transaction() as s:
        locking.unlock_disk(s, 'd1', 'op2')  # not the holder: no effect
        assert s.get(models.Disk, 'd1').operation_id == 'op1'
        locking.unlock_disk(s, 'd1', 'op1')
    with db.transaction() as s:
        assert s.get(models.Disk, 'd1').operation_id is None


def test_disk_lock_under_contention(database):
    """Many threads race for one disk: exactly one wins."""
    with db.transaction() as s:
        _server(s)
    winners = []
    barrier = threading.Barrier(8)

    def race(i):
        barrier.wait()
        with db.transaction() as s:
            if locking.lock_disk(s, 'd1', 'op%d' % i):
                winners.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_host_liveness(database, conf):
    with db.transaction() as s:
        assert not db.host_is_alive(s, 'h1')
    hosts.record_heartbeat('h1', {'image_dirs': ['/x'], 'started_at': 1.0,
                                  'rpc_version': '1.4'})
    with db.transaction() as s:
        assert db.host_is_alive(s, 'h1')
        s.get(models.Host, 'h1').last_heartbeat = models.utcnow().replace(
            year=2000)
    with db.transaction() as s:
        assert not db.host_is_alive(s, 'h1')


def test_work_waits_for_disk(database):
    """What a report asks before it starts anything waiting for the disk
    it frees: a pending operation, or a logically deleted snapshot.
    """
    with db.transaction() as s:
        _server(s)
        s.add(models.Disk(id='d2', server_id='srv', name='vdb',
                          active_image='/images/b.qcow2'))
        s.add(models.Snapshot(id='s1', disk_id='d1', project_id='p1',
                              name='s1', status='available'))
    with db.transaction() as s:
        assert not db.work_waits_for_disk(s, 'd1')
        s.get(models.Snapshot, 's1').status = 'deleted'
    with db.transaction() as s:
        assert db.work_waits_for_disk(s, 'd1')
        assert not db.work_waits_for_disk(s, 'd2')
        s.add(models.Operation(
            id='op1', project_id='p1', server_id='srv', disk_id='d2',
            host='h', action='create', status='pending', steps=[]))
    with db.transaction() as s:
        assert db.work_waits_for_disk(s, 'd2')
        s.get(models.Operation, 'op1').status = 'failed'
    with db.transaction() as s:
        assert not db.work_waits_for_disk(s, 'd2')
