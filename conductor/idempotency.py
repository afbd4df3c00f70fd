"""Idempotency keys of the REST API's writes (``Idempotency-Key``).

A POST or DELETE that carries a key claims it for the caller's project
(:func:`begin`) before its controller runs; its answer is stored with the
key (:func:`finish`).  A repeat within ``[api] idempotency_window``, on any
conductor and after a restart, gets the stored answer and starts nothing.
Everything lives in the database (``models.IdempotencyKey``), never in a
conductor's memory.

The operations a request records are written on its key in the same
transaction as each operation (:func:`attach`, called by
``operations.record``): a request whose conductor died after recording its
operation but before answering is answered from that operation, never
started twice.  A claim that recorded nothing is the request still being
processed (a repeat is 409) until :data:`CLAIM_LEASE` passes; after that its
conductor is taken as gone with nothing done, and the repeat takes the
claim over and runs.  A request that fails with nothing recorded (a bad
request, a busy disk, the rate limit, a database error) gives its key up
(:func:`release`): the tenant may send it again.
"""

import collections
import contextlib
import datetime
import hashlib
import json
import logging
import threading
import uuid

from oslo_config import cfg
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from conductor.db import api as db
from conductor.db import models
from conductor import exception

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

IN_PROGRESS = 'in_progress'
DONE = 'done'

#: Seconds a claim that recorded nothing is taken as a request still being
#: processed (its repeat is 409); a request spends far less than this
#: before it commits its operation.
CLAIM_LEASE = 120.0

#: The methods that take a key.
METHODS = ('POST', 'DELETE')

_CURRENT = threading.local()


class Claim(collections.namedtuple('Claim', 'id project_id key')):
    """A key this request holds: run the request, then :func:`finish`."""


class Replay(collections.namedtuple('Replay',
                                    'id status body operation_ids')):
    """A key already used by the same request: answer ``status`` and
    ``body``, or, if ``status`` is None, the answer of the operations
    ``operation_ids`` (its first conductor did not answer).
    """


def fingerprint(body):
    """SHA-256 of a parsed JSON body, whatever its spacing and key order."""
    text = json.dumps(body, sort_keys=True, separators=(',', ':'),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode('utf-8')).hexdigest()


def _window():
    return datetime.timedelta(seconds=CONF.api.idempotency_window)


def begin(project_id, key, method, path, body_fingerprint):
    """Claim ``key`` for this request, or find its earlier use.

    :returns: a :class:`Claim` (run the request) or a :class:`Replay`.
    :raises: IdempotencyKeyInUse (409) while the first request with the
        key is being processed; IdempotencyKeyReused (422) when the key
        was used for another method, path or body.
    """
    now = models.utcnow()
    table = models.IdempotencyKey
    try:
        with db.transaction() as s:
            # An expired key is forgotten: the request is a new one.
            s.execute(sa.delete(table)
                      .where(table.project_id == project_id)
                      .where(table.key == key)
                      .where(table.created_at < now - _window()))
            row = s.scalars(sa.select(table)
                            .where(table.project_id == project_id)
                            .where(table.key == key)
                            .with_for_update()).first()
            if row is None:
                row = table(id=str(uuid.uuid4()), project_id=project_id,
                            key=key, method=method, path=path,
                            fingerprint=body_fingerprint,
                            status=IN_PROGRESS,
                            conductor=CONF.conductor.host,
                            created_at=now, claimed_at=now)
                s.add(row)
                s.flush()
                return Claim(row.id, project_id, key)
            return _found(row, now, key, method, path, body_fingerprint)
    except sa_exc.IntegrityError:
        # Another request inserted the key between our read and insert.
        raise exception.IdempotencyKeyInUse(key=key)


def _found(row, now, key, method, path, body_fingerprint):
    if (row.method, row.path, row.fingerprint) != (
            method, path, body_fingerprint):
        what = 'the same request with another body' if (
            row.method, row.path) == (method, path) else (
            '%s %s' % (row.method, row.path))
        raise exception.IdempotencyKeyReused(
            key=key, first=what,
            seconds=(now - row.created_at).total_seconds())
    if row.status == DONE:
        return Replay(row.id, row.response_status, row.response_body, None)
    if row.operation_ids:
        return Replay(row.id, None, None, list(row.operation_ids))
    held = (now - row.claimed_at).total_seconds()
    if held < CLAIM_LEASE:
        raise exception.IdempotencyKeyInUse(key=key, retry_after=1)
    LOG.warning('Idempotency key of %(project)s claimed %(s).0f s ago by '
                '%(conductor)s recorded nothing; taken over',
                {'project': row.project_id, 's': held,
                 'conductor': row.conductor})
    row.claimed_at = now
    row.conductor = CONF.conductor.host
    return Claim(row.id, row.project_id, key)


@contextlib.contextmanager
def claimed(claim):
    """Within it, the operations recorded in this thread are the claim's
    (:func:`attach`).
    """
    _CURRENT.claim = claim
    try:
        yield
    finally:
        _CURRENT.claim = None


def attach(session, operation_id):
    """Note ``operation_id`` on the key this thread's request holds, in
    the caller's transaction (the one that records the operation).
    """
    claim = getattr(_CURRENT, 'claim', None)
    if claim is None:
        return
    row = session.get(models.IdempotencyKey, claim.id)
    if row is not None:
        row.operation_ids = list(row.operation_ids or []) + [operation_id]


def finish(key_id, status, body):
    """Store the answer of the request that holds the key.

    A failure is logged, not raised: the request's work is done, and a
    repeat is answered from its operations.
    """
    try:
        with db.transaction() as s:
            row = s.get(models.IdempotencyKey, key_id)
            if row is not None:
                row.status = DONE
                row.response_status = status
                row.response_body = body
    except Exception:
        LOG.exception('Could not store the answer of idempotency key '
                      '%(id)s', {'id': key_id})


def release(claim):
    """Give the key up after a request failed, unless it recorded an
    operation (then a repeat is answered from it).
    """
    try:
        with db.transaction() as s:
            row = s.get(models.IdempotencyKey, claim.id)
            if row is not None and not row.operation_ids:
                s.delete(row)
    except Exception:
        LOG.exception('Could not release idempotency key %(id)s',
                      {'id': claim.id})


def purge_expired():
    """Forget the keys older than ``[api] idempotency_window`` (a periodic
    task of every conductor).
    """
    table = models.IdempotencyKey
    with db.transaction() as s:
        gone = s.execute(sa.delete(table).where(
            table.created_at < models.utcnow() - _window())).rowcount
    if gone:
        LOG.info('Purged %(n)d expired idempotency keys', {'n': gone})
    return gone
