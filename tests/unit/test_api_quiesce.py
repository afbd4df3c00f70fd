"""The snapshot create's ``quiesce`` and what each snapshot records
(``consistency``, ``consistency_reason``), in-process (real qemu-img on an
offline disk; the real guest is in tests/functional/test_guest_quiesce.py)."""

import os

import pytest

from agent import images
from conductor.db import api as db
from conductor.db import models
from livesnap_tools import fixtures
from tests.functional import scenarios


def _register(dep, server_id, qga_socket=None):
    base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server_id)
    images.create_base(base, 16 * scenarios.MiB)
    server = {'id': server_id, 'name': server_id, 'project_id': 'p1',
              'host': fixtures.HOST, 'disks': [{'name': 'vda', 'path': base}]}
    if qga_socket:
        server['qga_socket'] = qga_socket
    dep.ok('POST', '/v1/servers', {'server': server}, token='admin-token',
           status=201)
    return base


def _create(dep, server_id, quiesce=None, status=202):
    spec = {'name': 'q', 'disk': 'vda'}
    if quiesce:
        spec['quiesce'] = quiesce
    path = '/v1/servers/%s/snapshots' % server_id
    if status >= 400:
        code, payload = dep.api('POST', path, {'snapshot': spec}, 'p1-token')
        assert code == status, payload
        return payload
    return dep.ok('POST', path, {'snapshot': spec}, token='p1-token',
                  status=status)


def test_default_is_off_without_channel(inprocess):
    _register(inprocess, 'srv1')
    body = _create(inprocess, 'srv1')
    op = inprocess.wait_operation(body['operation']['id'], token='p1-token')
    assert op['status'] == 'succeeded', op
    snap = inprocess.ok('GET', '/v1/snapshots/%s' % body['snapshot']['id'],
                        token='p1-token')['snapshot']
    assert snap['consistency'] == 'crash'
    assert snap['consistency_reason']
    with db.transaction() as s:
        assert s.get(models.Operation, op['id']).task['quiesce'] == 'off'


def test_required_without_channel_is_refused(inprocess):
    _register(inprocess, 'srv1')
    body = _create(inprocess, 'srv1', 'required', status=400)
    assert 'guest agent' in str(body)


def test_invalid_mode_is_refused(inprocess):
    _register(inprocess, 'srv1')
    _create(inprocess, 'srv1', 'always', status=400)


def test_channel_makes_preferred_default(inprocess):
    """Offline, nothing to freeze: crash-consistent, and says why."""
    _register(inprocess, 'srv1', qga_socket='/run/qga-srv1.sock')
    body = _create(inprocess, 'srv1')
    op = inprocess.wait_operation(body['operation']['id'], token='p1-token')
    assert op['status'] == 'succeeded', op
    with db.transaction() as s:
        task = s.get(models.Operation, op['id']).task
        assert task['quiesce'] == 'preferred'
        assert task['disk']['qga_socket'] == '/run/qga-srv1.sock'
        snap = s.get(models.Snapshot, body['snapshot']['id'])
        assert snap.consistency == 'crash'
        assert 'offline' in snap.consistency_reason


def test_agent_below_1_7_gets_no_quiesce(inprocess, monkeypatch):
    from conductor import agent_versions
    monkeypatch.setattr(agent_versions, 'capabilities',
                        lambda host: frozenset())
    _register(inprocess, 'srv1', qga_socket='/run/qga-srv1.sock')
    _create(inprocess, 'srv1', 'required', status=400)
    body = _create(inprocess, 'srv1', 'preferred')
    op = inprocess.wait_operation(body['operation']['id'], token='p1-token')
    assert op['status'] == 'succeeded', op
    with db.transaction() as s:
        assert 'quiesce' not in s.get(models.Operation, op['id']).task
        snap = s.get(models.Snapshot, body['snapshot']['id'])
        assert snap.consistency == 'crash'
        assert '1.7' in snap.consistency_reason


@pytest.mark.parametrize('mode', ['required', 'preferred', 'off'])
def test_task_schema_takes_quiesce(mode):
    from livesnap import tasks
    task = tasks.validate('create_snapshot', {
        'operation_id': 'op', 'layer_name': 'l', 'quiesce': mode,
        'disk': {'driver': 'qemu', 'path': '/x/y.qcow2', 'qmp_socket': None,
                 'qga_socket': '/run/q.sock'}})
    assert task['quiesce'] == mode
