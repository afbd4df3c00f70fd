"""Idempotency-Key of the REST API's writes (``conductor.idempotency``):
a repeat is answered the first answer and starts nothing, a repeat while
the first is processed is 409, the key with another body 422, keys of
different projects never meet, old keys expire.  Conductor, API and agent
in-process (offline disks) on SQLite, PostgreSQL and MariaDB."""

import datetime
import json
import os
import time
import urllib.error
import urllib.request
import uuid

import pytest
import sqlalchemy as sa

from agent import images
from agent import steps
from conductor import creation
from conductor.db import api as db
from conductor.db import models
from conductor import dispatch
from conductor import idempotency
from livesnap import context
from tests.functional import scenarios

SNAP = {'snapshot': {'name': 'k', 'disk': 'vda'}}
PATH = '/v1/servers/srv1/snapshots'


@pytest.fixture
def offline(inprocess):
    """An offline server 'srv1' of project p1 with a 16 MiB disk."""
    base = os.path.join(inprocess.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 16 * scenarios.MiB)
    inprocess.register_server('srv1', base)
    return inprocess


def _send(dep, method, path, body=None, key=None, token='p1-token'):
    """(status, headers, JSON body) of one request with ``key``."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(dep.base_url + path, data=data,
                                 method=method)
    req.add_header('X-Auth-Token', token)
    if data is not None:
        req.add_header('Content-Type', 'application/json')
    if key is not None:
        req.add_header('Idempotency-Key', key)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def _count(table):
    with db.transaction() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(table))


def test_repeat_is_answered_the_first_answer(offline):
    dep = offline
    key = str(uuid.uuid4())
    status, headers, first = _send(dep, 'POST', PATH, SNAP, key)
    assert status == 202 and headers.get('Idempotent-Replayed') is None
    dep.wait_operation(first['operation']['id'])
    status, headers, again = _send(dep, 'POST', PATH, SNAP, key)
    assert (status, again) == (202, first)
    assert headers['Idempotent-Replayed'] == 'true'
    assert _count(models.Operation) == 1
    assert _count(models.Snapshot) == 1
    # The same for a DELETE.
    path = '/v1/snapshots/%s' % first['snapshot']['id']
    status, _, deleted = _send(dep, 'DELETE', path, key='del-1')
    assert status == 202
    dep.wait_operation(deleted['operation']['id'])
    status, headers, again = _send(dep, 'DELETE', path, key='del-1')
    assert (status, again) == (202, deleted)
    assert headers['Idempotent-Replayed'] == 'true'
    assert _count(models.Operation) == 2
    # Without a key, every request is a new one (the disk is free again).
    assert _send(dep, 'POST', PATH, SNAP)[0] == 202
    assert _count(models.Operation) == 3


def test_key_with_another_request_is_422(offline):
    dep = offline
    status, _, first = _send(dep, 'POST', PATH, SNAP, 'k1')
    assert status == 202
    other = {'snapshot': {'name': 'other', 'disk': 'vda'}}
    status, _, body = _send(dep, 'POST', PATH, other, 'k1')
    assert status == 422
    assert body['error']['code'] == 'idempotency_key_reused'
    assert 'another body' in body['error']['message']
    path = '/v1/snapshots/%s' % first['snapshot']['id']
    status, _, body = _send(dep, 'DELETE', path, key='k1')
    assert status == 422
    assert 'POST %s' % PATH in body['error']['message']
    assert _count(models.Operation) == 1
    # The same body, keys in another order and spacing: the same request.
    status, headers, _ = _send(
        dep, 'POST', PATH, {'snapshot': {'disk': 'vda', 'name': 'k'}}, 'k1')
    assert status == 202 and headers['Idempotent-Replayed'] == 'true'


def test_bad_key_is_400(offline):
    dep = offline
    for key in ('', 'x' * 256, 'caf\u00e9'.encode().decode('latin-1')):
        status, _, body = _send(dep, 'POST', PATH, SNAP, key)
        assert status == 400, key
        assert 'Idempotency-Key' in body['error']['message']
    assert _count(models.Operation) == 0


def test_keys_of_projects_never_meet(offline):
    dep = offline
    status, _, first = _send(dep, 'POST', PATH, SNAP, 'shared')
    assert status == 202
    # p2 cannot see srv1: its request with the same key is its own, 404,
    # never p1's answer.
    status, headers, body = _send(dep, 'POST', PATH, SNAP, 'shared',
                                  token='p2-token')
    assert status == 404 and 'Idempotent-Replayed' not in headers
    # The admin's project registers a server with the same key.
    base = os.path.join(dep.image_dir, 'srv2-vda.qcow2')
    images.create_base(base, 16 * scenarios.MiB)
    server = {'server': {'id': 'srv2', 'name': 'srv2', 'project_id': 'p2',
                         'host': 'hv1', 'disks': [{'name': 'vda',
                                                   'path': base}]}}
    status, headers, _ = _send(dep, 'POST', '/v1/servers', server,
                               'shared', token='admin-token')
    assert status == 201 and 'Idempotent-Replayed' not in headers
    status, headers, again = _send(dep, 'POST', PATH, SNAP, 'shared')
    assert (status, again) == (202, first)
    assert headers['Idempotent-Replayed'] == 'true'


def test_failed_request_gives_the_key_up(offline):
    dep = offline
    bad = {'snapshot': {'name': 'k', 'disk': 'vdz'}}
    assert _send(dep, 'POST', PATH, bad, 'k2')[0] == 404
    assert _count(models.IdempotencyKey) == 0
    status, headers, _ = _send(dep, 'POST', PATH, bad, 'k2')
    assert status == 404 and 'Idempotent-Replayed' not in headers


def test_repeat_while_in_flight_is_409(offline, monkeypatch):
    dep = offline
    fp = idempotency.fingerprint(SNAP)
    claim = idempotency.begin('p1', 'k3', 'POST', PATH, fp)
    assert isinstance(claim, idempotency.Claim)
    status, headers, body = _send(dep, 'POST', PATH, SNAP, 'k3')
    assert status == 409
    assert body['error']['code'] == 'idempotency_key_in_use'
    assert 'still being processed' in body['error']['message']
    assert headers['Retry-After'] == '1'
    assert _count(models.Operation) == 0
    # A claim that recorded nothing for the whole lease: its conductor
    # is gone, the repeat takes it over and runs.
    monkeypatch.setattr(idempotency, 'CLAIM_LEASE', 0.0)
    status, headers, body = _send(dep, 'POST', PATH, SNAP, 'k3')
    assert status == 202 and 'Idempotent-Replayed' not in headers
    assert _count(models.Operation) == 1


def test_repeat_after_the_conductor_died_answers_its_operation(offline):
    """The first request recorded its snapshot and operation, then its
    conductor died before answering: the repeat answers them.
    """
    dep = offline
    claim = idempotency.begin('p1', 'k4', 'POST', PATH,
                              idempotency.fingerprint(SNAP))
    with idempotency.claimed(claim):
        snap_id, op_id, sent = creation.create(
            context.make('p1', ['member']), 'srv1', 'vda', 'k', 'p1')
        dispatch.send(context.make('p1', ['member']), sent)
    dep.wait_operation(op_id)
    status, headers, body = _send(dep, 'POST', PATH, SNAP, 'k4')
    assert status == 202 and headers['Idempotent-Replayed'] == 'true'
    assert body['snapshot']['id'] == snap_id
    assert body['operation']['id'] == op_id
    assert body['snapshot']['status'] == 'available'
    assert _count(models.Operation) == 1
    # The answer is stored: the next repeat is the same.
    assert _send(dep, 'POST', PATH, SNAP, 'k4')[2] == body


def test_expired_keys_are_forgotten(offline, conf):
    dep = offline
    status, _, first = _send(dep, 'POST', PATH, SNAP, 'k5')
    dep.wait_operation(first['operation']['id'])
    old = models.utcnow() - datetime.timedelta(seconds=86401)
    with db.transaction() as s:
        s.execute(sa.update(models.IdempotencyKey).values(created_at=old))
    # On lookup: the key is a new one.
    status, headers, second = _send(dep, 'POST', PATH, SNAP, 'k5')
    assert status == 202 and 'Idempotent-Replayed' not in headers
    assert second['snapshot']['id'] != first['snapshot']['id']
    assert _count(models.IdempotencyKey) == 1
    # By the periodic purge.
    with db.transaction() as s:
        s.execute(sa.update(models.IdempotencyKey).values(created_at=old))
    assert idempotency.purge_expired() == 1
    assert _count(models.IdempotencyKey) == 0
    conf.set('idempotency_window', 60, group='api')
    assert idempotency.purge_expired() == 0


def _time(text):
    return datetime.datetime.fromisoformat(text.rstrip('Z'))


def test_taken_at_lies_between_request_and_end(offline):
    """An offline create (no pause): the moment the agent began."""
    dep = offline
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'when')
    snap = dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot']
    assert _time(snap['created_at']) <= _time(snap['taken_at']) <= \
        _time(op['updated_at'])
    listed = dep.ok('GET', PATH)['snapshots']
    assert [s['taken_at'] for s in listed] == [snap['taken_at']]


def test_recorder_takes_the_first_pause_on_qemus_clock():
    rec = steps.StepRecorder()
    assert rec.taken_at is None
    rec.mark_paused()
    rec.mark_resumed(qemu_pause_ms=2.0, qemu_paused_at=1700000000.25)
    rec.mark_paused()
    rec.mark_resumed(qemu_pause_ms=2.0, qemu_paused_at=1700000009.0)
    assert rec.taken_at == 1700000000.25
    # Without QEMU's events: the agent's clock at the pause.
    rec = steps.StepRecorder()
    rec.mark_paused()
    rec.mark_resumed()
    assert abs(rec.taken_at - time.time()) < 5
