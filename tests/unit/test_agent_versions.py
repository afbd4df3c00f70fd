"""Rolling upgrades: the conductor pins what it sends to the agents to the
versions they report in their heartbeats (``conductor.agent_versions``)."""

import datetime

import pytest

from agent import rpcapi as agent_rpcapi
from conductor import agent_versions
from conductor import cancellation
from conductor.db import api as db
from conductor.db import models
from conductor import exception
from conductor import hosts
from livesnap import context
from livesnap import rpc


@pytest.fixture
def versions(database, monkeypatch):
    """Conductor at 1.7; hosts reporting 1.5 and 1.7 (up), a down host at
    1.4, and one at 1.2 that an older conductor recorded (up).
    """
    monkeypatch.setattr(agent_rpcapi, 'RPC_API_VERSION', '1.7')
    agent_versions.forget()
    now = models.utcnow()
    long_ago = now - datetime.timedelta(hours=1)
    with db.transaction() as s:
        s.add(models.Host(name='h15', last_heartbeat=now,
                          info={'rpc_version': '1.5'}))
        s.add(models.Host(name='h17', last_heartbeat=now,
                          info={'rpc_version': '1.7'}))
        s.add(models.Host(name='gone', last_heartbeat=long_ago,
                          info={'rpc_version': '1.4'}))
        s.add(models.Host(name='h12', last_heartbeat=now,
                          info={'rpc_version': '1.2'}))
    yield
    agent_versions.forget()


def test_cap_is_the_lowest_version_of_the_hosts_up(versions):
    # h12 is older than the minimum: left out, it gets nothing.
    assert agent_versions.version_cap() == '1.5'
    api = agent_versions.client()
    assert api.client.can_send_version('1.5')
    assert not api.client.can_send_version('1.6')
    assert not api.can_send_version('1.7')


def test_each_host_gets_what_it_reported(versions):
    api = agent_versions.client()
    assert api.can_send_version('1.7', host='h17')
    assert not api.can_send_version('1.6', host='h15')
    assert api.can_send_version('1.5', host='h15')
    assert not api.can_send_version('1.4', host='h12')
    # A host that never sent a heartbeat: the lowest of those up.
    assert agent_versions.version_cap('new') == '1.5'


def test_capabilities_follow_the_reported_version(versions):
    assert agent_versions.capabilities('h17') == {
        agent_versions.DESCRIBE_VM, agent_versions.GROUPS,
        agent_versions.QUIESCE}
    assert agent_versions.capabilities('h15') == {
        agent_versions.DESCRIBE_VM}
    assert agent_versions.capabilities('gone') == frozenset()
    assert agent_versions.capabilities('h12') == frozenset()


def test_a_call_above_the_host_version_is_refused_before_sending(versions):
    api = agent_versions.client()
    with pytest.raises(rpc.messaging.RPCVersionCapError):
        api.describe_vm(context.make(), 'gone', 'vm')
    with pytest.raises(rpc.messaging.RPCVersionCapError):
        api.cancel_operation(context.make(), 'h12', 'op-1')


def test_never_above_the_conductors_own(versions, monkeypatch):
    monkeypatch.setattr(agent_rpcapi, 'RPC_API_VERSION', '1.6')
    assert agent_versions.version_cap('h17') == '1.6'


def test_an_agent_older_than_the_minimum_is_ignored(versions, caplog):
    """Its heartbeats are not recorded (its host stays down) and the log
    says why; a heartbeat without a version counts as 1.0.
    """
    hosts.record_heartbeat('old', {'version': '0.1', 'image_dirs': ['/i']})
    hosts.record_heartbeat('old', {'rpc_version': '1.3'})
    with db.transaction() as s:
        assert s.get(models.Host, 'old') is None
    assert 'agent RPC API 1.0, older than 1.4' in caplog.text
    assert 'agent RPC API 1.3, older than 1.4' in caplog.text
    assert agent_versions.version_cap() == '1.5'
    hosts.record_heartbeat('old', {'rpc_version': '1.4'})
    assert agent_versions.version_cap() == '1.4'


def test_work_for_a_host_left_on_an_old_agent_is_refused(versions):
    """A host whose last heartbeat (recorded by an older conductor) says
    1.2: once it counts as down, the refusal names the version.
    """
    with db.transaction() as s:
        s.get(models.Host, 'h12').last_heartbeat = models.utcnow() - \
            datetime.timedelta(hours=1)
    with db.transaction() as s:
        with pytest.raises(exception.AgentUnsupported) as err:
            hosts.ensure_alive(s, 'h12')
        with pytest.raises(exception.HostDown) as down:
            hosts.ensure_alive(s, 'gone')
    assert '1.2' in str(err.value) and '1.4' in str(err.value)
    assert err.value.status == 503
    assert not isinstance(down.value, exception.AgentUnsupported)


def test_a_heartbeat_moves_the_pin_at_once(versions):
    assert agent_versions.version_cap('h15') == '1.5'
    hosts.record_heartbeat('h15', {'rpc_version': '1.7'})
    assert agent_versions.version_cap('h15') == '1.7'
    assert agent_versions.version_cap() == '1.7'


def test_unreadable_versions_count_as_1_0():
    for info in (None, {}, {'rpc_version': 14}, {'rpc_version': 'x.y'},
                 {'rpc_version': '1.4\n'}):
        assert agent_versions.reported_version(info) == '1.0'
    assert agent_versions.reported_version({'rpc_version': '1.12'}) == '1.12'
    assert agent_versions.parse('1.12') > agent_versions.parse('1.4')


def test_read_inside_a_transaction(versions):
    """A task is built inside a transaction: reading the versions there
    must not queue behind it (SQLite's BEGIN IMMEDIATE would).
    """
    agent_versions.forget()
    with db.transaction() as s:
        host = s.get(models.Host, 'h15', with_for_update=True)
        host.last_heartbeat = models.utcnow()
        s.flush()
        assert agent_versions.version_cap() == '1.5'


def test_cancel_on_an_old_agent_is_409(versions):
    with db.transaction() as s:
        s.add(models.Server(id='srv', name='s', project_id='p1', host='h12'))
        s.add(models.Disk(id='disk', server_id='srv', name='vda',
                          active_image='/i/a.qcow2', operation_id='op-1'))
        s.add(models.Operation(
            id='op-1', project_id='p1', server_id='srv', disk_id='disk',
            host='h12', action='delete', mode='merge', status='running',
            requested_by='tenant', attempts=0))
    with pytest.raises(exception.NotCancellable) as err:
        cancellation.cancel(context.make(), 'op-1')
    assert 'RPC API 1.2' in str(err.value)
