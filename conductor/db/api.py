"""Database access for the conductor.

``transaction()`` yields an ORM session inside one transaction.  On SQLite
every transaction starts with ``BEGIN IMMEDIATE`` so that concurrent
writers queue instead of failing on a lock upgrade; on PostgreSQL and
MySQL/MariaDB every transaction runs at READ COMMITTED (MariaDB's default,
REPEATABLE READ, would answer later reads from the snapshot of the first
one) and the disk lock is a compare-and-swap UPDATE, safe with any number
of conductors (``conductor.locking``).

``reader()`` yields a connection for the API's lean reads
(``conductor.db.reads``): on PostgreSQL and MySQL from a second pool whose
connections are in autocommit, so a read is one round trip per statement,
with no BEGIN or COMMIT.  Each pool holds ``[database] max_pool_size``
connections (plus ``max_overflow`` for bursts, closed after use): at least
the API's threads, or connections are made and closed per request.

Pooled connections are not pinged before every use (``pool_pre_ping``
costs a round trip per transaction); only one that sat idle in the pool
for :data:`PING_AFTER_IDLE` seconds is, and a dead one is replaced before
the caller sees it.  A connection the server dropped while it was busy
fails that one transaction, and SQLAlchemy then discards the whole pool.
"""

import contextlib
import os
import threading
import time

from oslo_config import cfg
import sqlalchemy as sa
from sqlalchemy import orm

from conductor.db import migration
from conductor.db import models
from conductor.db import reads
from conductor import exception
from conductor import states

CONF = cfg.CONF

_LOCK = threading.Lock()
_ENGINE = None
_SESSIONMAKER = None
_READER = None

#: Execution option of a SQLite read that begins deferred.
_NEVER_WAIT = 'livesnap_never_wait'

#: Seconds a pooled connection may sit idle before it is pinged on
#: checkout (servers and firewalls drop idle connections).
PING_AFTER_IDLE = 30.0


def _make_engine(url, **kwargs):
    if url.startswith('sqlite'):
        path = url.split(':///', 1)[-1]
        if path and path != ':memory:':
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={
            'timeout': 30, 'check_same_thread': False})

        @sa.event.listens_for(engine, 'connect')
        def _on_connect(dbapi_connection, record):
            # Let SQLAlchemy, not the driver, start transactions.
            dbapi_connection.isolation_level = None
            dbapi_connection.execute('PRAGMA foreign_keys=ON')

        @sa.event.listens_for(engine, 'begin')
        def _on_begin(connection):
            if connection.get_execution_options().get(_NEVER_WAIT):
                connection.exec_driver_sql('BEGIN')  # see read_never_waiting
            else:
                connection.exec_driver_sql('BEGIN IMMEDIATE')
        return engine
    kwargs.setdefault('isolation_level', 'READ COMMITTED')
    engine = sa.create_engine(url, pool_size=CONF.database.max_pool_size,
                              max_overflow=CONF.database.max_overflow,
                              **kwargs)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine):
    """Ping a pooled connection on checkout only if it sat idle for
    :data:`PING_AFTER_IDLE` seconds; a dead one raises DisconnectionError,
    on which the pool discards it and connects afresh.
    """

    @sa.event.listens_for(engine, 'checkin')
    def _on_checkin(dbapi_connection, record):
        record.info['livesnap_idle_since'] = time.monotonic()

    @sa.event.listens_for(engine, 'checkout')
    def _on_checkout(dbapi_connection, record, proxy):
        since = record.info.get('livesnap_idle_since')
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            if not getattr(dbapi_connection, 'autocommit', False):
                dbapi_connection.rollback()  # end the ping's transaction
        except engine.dialect.loaded_dbapi.Error as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None):
                raise sa.exc.DisconnectionError(str(exc)) from exc
            raise


def get_engine():
    """The process's engine for ``[database] connection``."""
    global _ENGINE, _SESSIONMAKER, _READER
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = _make_engine(CONF.database.connection)
            _SESSIONMAKER = orm.sessionmaker(bind=_ENGINE,
                                             expire_on_commit=False)
            # A pool of its own, in autocommit from the connect on: no
            # isolation level set and reset around every read.
            _READER = (None if _ENGINE.dialect.name == 'sqlite' else
                       _make_engine(CONF.database.connection,
                                    isolation_level='AUTOCOMMIT'))
        return _ENGINE


def reset():
    """Forget the engine (tests switch databases with this)."""
    global _ENGINE, _SESSIONMAKER, _READER
    with _LOCK:
        for engine in (_ENGINE, _READER):
            if engine is not None:
                engine.dispose()
        _ENGINE = None
        _SESSIONMAKER = None
        _READER = None


def sync():
    """Upgrade the schema to the newest migration."""
    migration.upgrade(get_engine())


@contextlib.contextmanager
def transaction():
    """One transaction; commits on success, rolls back on any error."""
    get_engine()
    session = _SESSIONMAKER()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


@contextlib.contextmanager
def reader():
    """A Core connection for reads that need no transaction.

    PostgreSQL and MySQL: autocommit, each statement sees what was
    committed when it started (one statement per consistent read).
    SQLite: a transaction like the writers' (they rely on BEGIN
    IMMEDIATE).
    """
    engine = get_engine()
    if _READER is None:
        with engine.begin() as conn:
            yield conn
    else:
        with _READER.connect() as conn:
            yield conn


@contextlib.contextmanager
def read_never_waiting():
    """A Core connection for a short read that never waits for a writer,
    not even for a transaction the calling thread itself has open.

    The conductor reads the agents' RPC versions (``conductor.
    agent_versions``) from wherever it builds a task, which may be inside
    a transaction.  SQLite: a deferred transaction, which reads beside a
    writer's RESERVED lock (``reader()`` would queue behind it with BEGIN
    IMMEDIATE, behind the caller's own transaction).  PostgreSQL and
    MySQL: ``reader()``'s autocommit pool.
    """
    engine = get_engine()
    if _READER is not None:
        with _READER.connect() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(**{_NEVER_WAIT: True})
        yield conn


# ---------------------------------------------------------------- hosts

def host_heartbeat(name, info=None, started_at=None):
    with transaction() as s:
        host = s.get(models.Host, name)
        if host is None:
            host = models.Host(name=name)
            s.add(host)
        host.last_heartbeat = models.utcnow()
        if info is not None:
            host.info = info
        if started_at is not None:
            host.started_at = started_at


def host_list():
    with transaction() as s:
        return list(s.scalars(sa.select(models.Host).order_by(
            models.Host.name)))


def host_is_alive(session, name):
    return _heard_from_lately(session.get(models.Host, name))


def _heard_from_lately(host):
    """Whether ``host`` (a Host or None) sent a heartbeat within
    ``[conductor] host_down_time``.
    """
    if host is None:
        return False
    age = (models.utcnow() - host.last_heartbeat).total_seconds()
    return age <= CONF.conductor.host_down_time


def hosts_with_liveness():
    """``[(host, alive)]`` of every host, by name."""
    with transaction() as s:
        return [(h, _heard_from_lately(h)) for h in s.scalars(
            sa.select(models.Host).order_by(models.Host.name))]


# -------------------------------------------------------------- servers

def server_get(session, server_id, project_id=None):
    """Return the server; another project's server is simply not found."""
    server = session.get(models.Server, server_id)
    if server is None or (project_id is not None
                          and server.project_id != project_id):
        raise exception.NotFound('Server %s could not be found.' % server_id)
    return server


def server_list(project_id=None):
    """The servers with their disks, oldest first; ``project_id`` None
    means every project's.
    """
    query = sa.select(models.Server).order_by(models.Server.created_at,
                                              models.Server.id)
    if project_id is not None:
        query = query.where(models.Server.project_id == project_id)
    with transaction() as s:
        return list(s.scalars(query))


def server_with_disks(server_id, project_id=None):
    """The server with its disks, read in a transaction of its own.

    :raises: NotFound, also for another project's server.
    """
    with transaction() as s:
        return server_get(s, server_id, project_id)


def server_owner(server_id, project_id=None):
    """The project owning the server, read on a ``reader()`` connection.

    :raises: NotFound, also for another project's server.
    """
    with reader() as conn:
        return reads.server_project(conn, server_id, project_id)


def server_snapshot_tree(server_id, project_id=None, include_deleted=False):
    """``(the project owning the server, [(snapshot row, DiskRef)])``: the
    snapshots of every disk of the server, oldest first, read on one
    ``reader()`` connection (``reads.snapshot_tree``).

    :raises: NotFound, also for another project's server.
    """
    with reader() as conn:
        owner = reads.server_project(conn, server_id, project_id)
        return owner, reads.snapshot_tree(conn, server_id, include_deleted)


def disk_id_by_name(session, server_id, name, project_id=None):
    """The id of server ``server_id``'s disk ``name``, read without
    loading either row (the caller then locks the disk's row and reads it
    once, fresh).

    :raises: NotFound for an unknown server (or another project's) or
        disk, as ``server_get`` and ``disk_get_by_name`` would.
    """
    row = session.execute(
        sa.select(models.Disk.id, models.Server.project_id)
        .join(models.Server, models.Disk.server_id == models.Server.id)
        .where(models.Server.id == server_id)
        .where(models.Disk.name == name)).first()
    if row is None or (project_id is not None
                       and row.project_id != project_id):
        server_get(session, server_id, project_id)
        raise exception.NotFound('Server %s has no disk named %s.'
                                 % (server_id, name))
    return row.id


def disk_get_by_name(session, server, name):
    for disk in server.disks:
        if disk.name == name:
            return disk
    raise exception.NotFound('Server %s has no disk named %s.'
                             % (server.id, name))


# ------------------------------------------------------------ snapshots

def snapshot_get(session, snapshot_id, project_id=None, include_deleted=True):
    snap = session.get(models.Snapshot, snapshot_id)
    if (snap is None
            or (project_id is not None and snap.project_id != project_id)
            or (not include_deleted and snap.status == states.DELETED)):
        raise exception.NotFound('Snapshot %s could not be found.'
                                 % snapshot_id)
    return snap


def snapshot_with_disk(snapshot_id, project_id=None):
    """``(snapshot, its disk)``, read in a transaction of their own;
    logically deleted snapshots included.

    :raises: NotFound, also for another project's snapshot.
    """
    with transaction() as s:
        snap = snapshot_get(s, snapshot_id, project_id, include_deleted=True)
        return snap, snap.disk


def snapshot_and_operation(snapshot_id, operation_id):
    """``(snapshot, its disk, operation)`` just started, read in one
    transaction.
    """
    with transaction() as s:
        snap = s.get(models.Snapshot, snapshot_id)
        return snap, snap.disk, s.get(models.Operation, operation_id)


def snapshot_project_and_status(snapshot_id, project_id=None):
    """``(project_id, status)`` of a snapshot, logically deleted ones
    included.

    :raises: NotFound, also for another project's snapshot.
    """
    with transaction() as s:
        snap = snapshot_get(s, snapshot_id, project_id, include_deleted=True)
        return snap.project_id, snap.status


def snapshots_of_disk(session, disk_id):
    return list(session.scalars(
        sa.select(models.Snapshot)
        .where(models.Snapshot.disk_id == disk_id)
        .order_by(models.Snapshot.created_at, models.Snapshot.id)))


def snapshots_of_server(session, server_id, include_deleted=False):
    query = (sa.select(models.Snapshot)
             .join(models.Disk, models.Snapshot.disk_id == models.Disk.id)
             .where(models.Disk.server_id == server_id)
             .order_by(models.Snapshot.created_at, models.Snapshot.id))
    if not include_deleted:
        query = query.where(models.Snapshot.status != states.DELETED)
    return list(session.scalars(query))


# ----------------------------------------------------------- operations

def operation_get(session, operation_id, project_id=None):
    op = session.get(models.Operation, operation_id)
    if op is None or (project_id is not None and op.project_id != project_id):
        raise exception.NotFound('Operation %s could not be found.'
                                 % operation_id)
    return op


def _disk_names(session, ops):
    ids = {op.disk_id for op in ops}
    if not ids:
        return {}
    return dict(session.execute(
        sa.select(models.Disk.id, models.Disk.name)
        .where(models.Disk.id.in_(ids))).all())


def operation_row(operation_id, project_id=None):
    """The operation's row with ``disk_name`` (``reads.operation``), read
    on a ``reader()`` connection.

    :raises: NotFound, also for another project's operation.
    """
    with reader() as conn:
        return reads.operation(conn, operation_id, project_id)


def operation_with_disk_name(operation_id):
    """``(operation, its disk's name or None)``, read in a transaction of
    their own.

    :raises: NotFound
    """
    with transaction() as s:
        op = operation_get(s, operation_id)
        return op, _disk_names(s, [op]).get(op.disk_id)


def operations_with_disk_names(project_id=None, server_id=None):
    """``[(operation, its disk's name or None)]``, newest first (see
    ``operation_list``), read in one transaction; all of them (the API
    pages them).
    """
    with transaction() as s:
        ops = operation_list(s, project_id, server_id, limit=None)
        names = _disk_names(s, ops)
        return [(op, names.get(op.disk_id)) for op in ops]


def operation_transition(session, operation_id, expected, new, **values):
    """Compare-and-set an operation's status.

    :param expected: the statuses the caller expects it to be in.
    :returns: True if the operation was in one of them and is now ``new``.
    """
    for old in expected:
        if not states.operation_may(old, new):
            raise states.InvalidTransition('operation %s: %s -> %s'
                                           % (operation_id, old, new))
    result = session.execute(
        sa.update(models.Operation)
        .where(models.Operation.id == operation_id)
        .where(models.Operation.status.in_(tuple(expected)))
        .values(status=new, updated_at=models.utcnow(), **values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def queued_operation(session, disk_id):
    """The oldest operation waiting for the disk (``pending``)."""
    return session.scalars(
        sa.select(models.Operation)
        .where(models.Operation.disk_id == disk_id)
        .where(models.Operation.status == states.PENDING)
        .order_by(models.Operation.created_at, models.Operation.id)
        .limit(1)).first()


def work_waits_for_disk(session, disk_id):
    """Does anything wait for the disk's lock: a ``pending`` operation, or
    a logically deleted snapshot (the conductor's own deferred work)?
    One query, so a report that frees a disk nobody waits for costs no
    further transaction.
    """
    pending = sa.select(models.Operation.id).where(
        models.Operation.disk_id == disk_id,
        models.Operation.status == states.PENDING)
    deleted = sa.select(models.Snapshot.id).where(
        models.Snapshot.disk_id == disk_id,
        models.Snapshot.status == states.DELETED)
    return bool(session.execute(
        sa.select(sa.or_(sa.exists(pending), sa.exists(deleted)))).scalar())


def disks_with_queued_operations(session):
    return list(session.scalars(
        sa.select(models.Operation.disk_id)
        .where(models.Operation.status == states.PENDING).distinct()))


def operation_list(session, project_id=None, server_id=None, limit=200):
    query = sa.select(models.Operation).order_by(
        models.Operation.created_at.desc()).limit(limit)
    if project_id is not None:
        query = query.where(models.Operation.project_id == project_id)
    if server_id is not None:
        query = query.where(models.Operation.server_id == server_id)
    return list(session.scalars(query))
