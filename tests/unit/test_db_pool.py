"""Pooled connections: no ping per transaction, but a connection the
server dropped while it sat idle is replaced before anyone uses it; and
the lean reader connection (``db.reader()``)."""

import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models


def _backend_pids():
    with db.transaction() as s:
        return s.execute(sa.text('SELECT pg_backend_pid()')).scalar()


def test_a_connection_dropped_while_idle_is_replaced(conf, postgres_url,
                                                     monkeypatch):
    from livesnap_tools import fixtures
    fixtures.pg_reset_schema(postgres_url)
    conf.set('connection', postgres_url, group='database')
    db.reset()
    try:
        db.sync()
        pid = _backend_pids()
        assert _backend_pids() == pid  # the same pooled connection
        fixtures.pg_admin('SELECT pg_terminate_backend(%d)' % pid)
        monkeypatch.setattr(db, 'PING_AFTER_IDLE', 0.0)
        # The ping on checkout finds it dead; the pool connects again.
        assert _backend_pids() != pid
        with db.reader() as conn:
            assert conn.execute(sa.text('SELECT 1')).scalar() == 1
    finally:
        db.reset()


def test_reader_sees_committed_rows(database):
    with db.transaction() as s:
        s.add(models.Host(name='h1', last_heartbeat=models.utcnow()))
    with db.reader() as conn:
        names = conn.execute(sa.select(models.Host.__table__.c.name)).all()
    assert [n for (n,) in names] == ['h1']
