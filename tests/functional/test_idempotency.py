"""A create whose answer was lost, repeated on another conductor: two
conductors (separate processes) share PostgreSQL and the real RabbitMQ.
The first records the snapshot, sends the task and dies before answering
(the fault point ``api:answer:before``); the tenant sends the same POST
with the same Idempotency-Key to the other conductor and gets the first
snapshot back.  Exactly one snapshot and one operation exist, and the
snapshot's ``taken_at`` (its pause on QEMU's clock) lies between its
request and the operation's end."""

import datetime
import http.client
import json
import urllib.error
import urllib.request

import pytest

from livesnap_tools import fixtures
from tests.functional import scenarios

pytestmark = pytest.mark.functional

KEY = 'create-after-a-lost-answer'
BODY = {'snapshot': {'name': 'once', 'disk': 'vda'}}
PATH = '/v1/servers/srv1/snapshots'


def _post(base_url, body, key, timeout=30):
    req = urllib.request.Request(base_url + PATH,
                                 data=json.dumps(body).encode(),
                                 method='POST')
    req.add_header('X-Auth-Token', 'p1-token')
    req.add_header('Content-Type', 'application/json')
    req.add_header('Idempotency-Key', key)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def _time(text):
    return datetime.datetime.fromisoformat(text.rstrip('Z'))


def test_lost_answer_repeated_on_another_conductor(tmp_path, rabbit_url,
                                                   postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url)
    with fixtures.running(dep):
        doomed_port = fixtures.free_port()
        dep.start_conductor(name='doomed', port=doomed_port,
                            fault_points=['api:answer:before'])
        vm, _ = scenarios.start_vm(dep, tmp_path)
        try:
            _scenario(dep, 'http://127.0.0.1:%d' % doomed_port)
        finally:
            vm.kill()


def _scenario(dep, doomed_url):
    with pytest.raises((ConnectionError, http.client.HTTPException,
                        urllib.error.URLError)):
        _post(doomed_url, BODY, KEY)
    assert dep.wait_exit('doomed') != 0
    # The tenant sends it again, to the conductor that lives.
    status, headers, body = _post(dep.base_url, BODY, KEY)
    assert status == 202, body
    assert headers['Idempotent-Replayed'] == 'true'
    snaps = dep.ok('GET', PATH)['snapshots']
    ops = dep.ok('GET', '/v1/operations')['operations']
    assert [s['id'] for s in snaps] == [body['snapshot']['id']]
    assert [o['id'] for o in ops] == [body['operation']['id']]
    op = dep.wait_operation(body['operation']['id'])
    assert op['status'] == 'succeeded' and op['mode'] == 'online', op
    # Once more: the stored answer; another body: 422, nothing started.
    again = _post(dep.base_url, BODY, KEY)
    assert again[0] == 202 and again[2] == body
    other = {'snapshot': {'name': 'twice', 'disk': 'vda'}}
    status, _, error = _post(dep.base_url, other, KEY)
    assert status == 422, error
    assert error['error']['code'] == 'idempotency_key_reused'
    assert len(dep.ok('GET', '/v1/operations')['operations']) == 1
    snap = dep.ok('GET', '/v1/snapshots/%s' % body['snapshot']['id'])[
        'snapshot']
    assert snap['status'] == 'available'
    assert snap['taken_at'] is not None, snap
    assert _time(snap['created_at']) <= _time(snap['taken_at']) <= \
        _time(op['updated_at']), (snap, op)
