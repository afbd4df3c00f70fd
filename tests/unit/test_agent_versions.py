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
    """Conductor at 1.4; hosts reporting 1.2 and 1.4 (up), an unreporting
    one (up) only where asked, and a down host at 1.0."""
    monkeypatch.setattr(agent_rpcapi, 'RPC_API_VERSION', '1.4')
    agent_versions.forget()
    now = models.utcnow()
    long_ago = now - datetime.timedelta(hours=1)
    with db.transaction() as s:
        s.add(models.Host(name='h12', last_heartbeat=now,
                          info={'rpc_version': '1.2'}))
        s.add(models.Host(name='h14', last_heartbeat=now,
                          info={'rpc_version': '1.4'}))
        s.add(models.Host(name='gone', last_heartbeat=long_ago,
                          info={'rpc_version': '1.0'}))
    yield
    agent_versions.forget()


def test_cap_is_the_lowest_version_of_the_hosts_up(versions):
    assert agent_versions.version_cap() == '1.2'
    api = agent_rpcapi.AgentAPI()
    assert api.client.can_send_version('1.2')
    assert not api.client.can_send_version('1.3')
    assert not api.can_send_version('1.4')


def test_each_host_gets_what_it_reported(versions):
    api = agent_rpcapi.AgentAPI()
    assert api.can_send_version('1.4', host='h14')
    assert not api.can_send_version('1.3', host='h12')
    assert api.can_send_version('1.2', host='h12')
    # A host that never sent a heartbeat: the lowest of those up.
    assert agent_versions.version_cap('new') == '1.2'


def test_a_call_above_the_host_version_is_refused_before_sending(versions):
    api = agent_rpcapi.AgentAPI()
    with pytest.raises(rpc.messaging.RPCVersionCapError):
        api.cancel_operation(context.make(), 'h12', 'op-1')
    with pytest.raises(rpc.messaging.RPCVersionCapError):
        api.abandon_operation(context.make(), 'gone', 'op-1')


def test_never_above_the_conductors_own(versions, monkeypatch):
    monkeypatch.setattr(agent_rpcapi, 'RPC_API_VERSION', '1.3')
    assert agent_versions.version_cap('h14') == '1.3'


def test_an_agent_that_reports_no_version_counts_as_1_0(versions):
    hosts.record_heartbeat('old', {'version': '0.1', 'image_dirs': ['/i']})
    assert agent_versions.version_cap('old') == '1.0'
    assert agent_versions.version_cap() == '1.0'
    hosts.record_heartbeat('old', {'rpc_version': '1.4'})
    assert agent_versions.version_cap() == '1.2'


def test_a_heartbeat_moves_the_pin_at_once(versions):
    assert agent_versions.version_cap('h12') == '1.2'
    hosts.record_heartbeat('h12', {'rpc_version': '1.4'})
    assert agent_versions.version_cap('h12') == '1.4'
    assert agent_versions.version_cap() == '1.4'


def test_unreadable_versions_count_as_1_0():
    for info in (None, {}, {'rpc_version': 14}, {'rpc_version': 'x.y'},
                 {'rpc_version': '1.4\n'}):
        assert agent_versions.reported_version(info) == '1.0'
    assert agent_versions.reported_version({'rpc_version': '1.12'}) == '1.12'
    assert agent_versions.parse('1.12') > agent_versions.parse('1.4')


def test_read_inside_a_transaction(versions):
    """A task is built inside a transaction: reading the versions there
    must not queue behind it (SQLite's BEGIN IMMEDIATE would)."""
    agent_versions.forget()
    with db.transaction() as s:
        host = s.get(models.Host, 'h12', with_for_update=True)
        host.last_heartbeat = models.utcnow()
        s.flush()
        assert agent_versions.version_cap() == '1.2'


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
