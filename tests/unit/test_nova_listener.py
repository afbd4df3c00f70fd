"""The nova listener's mapping and its idempotence
(``conductor.nova_listener``), on nova's published samples
(tests/functional/nova_samples/), the conductor's flows stubbed.
"""

import json
import os
import types
from unittest import mock

import pytest

from conductor import exception
from conductor import nova_listener
from conductor import unregister

SAMPLES = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'functional', 'nova_samples')
UUID = '178b0921-8f85-4257-88b6-2e743b5a975c'


def sample(name):
    with open(os.path.join(SAMPLES, name + '.json')) as f:
        return json.load(f)


def conf(**values):
    group = dict(host_mapping={}, keep_snapshots=False, retry_seconds=10)
    group.update(values)
    return types.SimpleNamespace(
        nova_notifications=types.SimpleNamespace(**group))


@pytest.fixture
def flows():
    server = types.SimpleNamespace(
        project_id='6f70656e737461636b20342065766572', host='compute',
        disks=[types.SimpleNamespace(name='vda')])
    with mock.patch.object(nova_listener.servers, 'register_domain',
                           return_value=server) as reg, \
            mock.patch.object(nova_listener.dispatch, 'delete_server',
                              return_value=('op1', [])) as delete, \
            mock.patch.object(nova_listener, '_registered',
                              return_value=True):
        yield reg, delete


def test_instance_from_nova_sample():
    inst = nova_listener.instance(sample('instance-create-end')['payload'])
    assert inst == {'uuid': UUID, 'host': 'compute',
                    'project_id': '6f70656e737461636b20342065766572',
                    'name': 'some-server', 'power_state': 'running',
                    'state': 'active'}
    assert nova_listener.instance({}) is None
    assert nova_listener.instance(
        sample('instance-live_migration_post-end')['payload']) is None


def test_server_spec_maps_domain_and_host():
    inst = nova_listener.instance(sample('instance-create-end')['payload'])
    assert nova_listener.server_spec(inst, conf()) == {
        'id': UUID, 'name': 'some-server',
        'project_id': '6f70656e737461636b20342065766572', 'host': 'compute',
        'driver': 'libvirt', 'domain': UUID}
    spec = nova_listener.server_spec(
        inst, conf(host_mapping={'compute': 'hv1'}))
    assert spec['host'] == 'hv1'


def test_create_registers_by_domain(flows):
    reg, _ = flows
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample('instance-create-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'registered'
    spec = reg.call_args[0][1]
    assert spec['driver'] == 'libvirt' and spec['domain'] == UUID


def test_create_twice_is_idempotent(flows):
    reg, _ = flows
    reg.side_effect = [mock.DEFAULT, exception.Conflict('exists')]
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample('instance-create-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'registered'
    assert ep.handle(msg['event_type'], msg['payload']) == 'exists'


def test_delete_before_create(flows):
    reg, delete = flows
    delete.side_effect = exception.NotFound('no')
    ep = nova_listener.NovaEndpoint(conf())
    gone = sample('instance-delete-end')
    assert ep.handle(gone['event_type'], gone['payload']) == 'unknown'
    msg = sample('instance-create-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'late'
    reg.assert_not_called()


def test_delete_unregisters_with_configured_keep(flows):
    _, delete = flows
    ep = nova_listener.NovaEndpoint(conf(keep_snapshots=True))
    msg = sample('instance-delete-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'deleting'
    assert delete.call_args[1] == {'keep_snapshots': True}


def test_delete_waits_for_busy_disk(flows):
    _, delete = flows
    delete.side_effect = [unregister.DisksBusy('busy'), ('op1', [])]
    slept = []
    ep = nova_listener.NovaEndpoint(conf(), sleep=slept.append)
    msg = sample('instance-delete-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'deleting'
    assert slept == [nova_listener.RETRY_INTERVAL]


def test_delete_busy_gives_up(flows):
    _, delete = flows
    delete.side_effect = unregister.DisksBusy('busy')
    ep = nova_listener.NovaEndpoint(conf(retry_seconds=0),
                                    sleep=lambda s: None)
    msg = sample('instance-delete-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'busy'


def test_delete_keeps_pinned_snapshots(flows):
    _, delete = flows
    delete.side_effect = [unregister.SnapshotsPinned('protected'),
                          (None, [{'path': '/img/a.qcow2'}])]
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample('instance-delete-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'unregistered'
    assert delete.call_args[1] == {'keep_snapshots': True}


def test_delete_with_host_down_removes_records(flows):
    _, delete = flows
    delete.side_effect = [exception.HostDown(host='compute'),
                          (None, [])]
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample('instance-delete-end')
    assert ep.handle(msg['event_type'], msg['payload']) == 'unregistered'
    assert delete.call_args[1] == {'keep_snapshots': True, 'force': True}


@pytest.mark.parametrize('name', ['instance-power_off-end',
                                  'instance-power_on-end',
                                  'instance-volume_attach-end'])
def test_other_events_are_logged(flows, name):
    reg, delete = flows
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample(name)
    assert ep.handle(msg['event_type'], msg['payload']) == 'logged'
    reg.assert_not_called()
    delete.assert_not_called()


def test_failure_is_acknowledged(flows):
    reg, _ = flows
    reg.side_effect = RuntimeError('boom')
    ep = nova_listener.NovaEndpoint(conf())
    msg = sample('instance-create-end')
    assert ep.info({}, 'nova-compute:compute', msg['event_type'],
                   msg['payload'], {'message_id': 'm1'}) is None
