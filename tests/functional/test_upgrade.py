"""Rolling upgrades on the real stack: an agent not yet upgraded (it serves
and reports agent RPC API 1.4, the oldest a conductor serves) beside an
upgraded conductor, over RabbitMQ and PostgreSQL with conductor and agent
as separate processes."""

import pytest

from agent import rpcapi as agent_rpcapi
from agent import service as agent_service
from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from livesnap import context
from livesnap import rpc
from livesnap_tools import fixtures
from tests.functional import scenarios

pytestmark = pytest.mark.functional


def test_conductor_works_with_an_older_agent(tmp_path, rabbit_url,
                                             postgres_url, conf, monkeypatch):
    fixtures.pg_reset_schema(postgres_url)
    monkeypatch.setenv(agent_service.TEST_RPC_VERSION_ENV, '1.4')
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url)
    rpc.cleanup()
    conf.set('transport_url', dep.transport_url)
    conf.set('control_exchange', dep.control_exchange)
    conf.set('connection', postgres_url, group='database')
    db.reset()
    agent_versions.forget()
    try:
        with fixtures.running(dep):
            with db.transaction() as s:
                info = s.get(models.Host, fixtures.HOST).info
            assert info['rpc_version'] == '1.4'
            assert agent_versions.version_cap(fixtures.HOST) == '1.4'
            pinned = agent_versions.client()
            assert not pinned.can_send_version('1.5', host=fixtures.HOST)
            # The agent really is older: unpinned, a 1.5 call is refused
            # on the agent's side.
            with pytest.raises(rpc.messaging.RemoteError) as err:
                agent_rpcapi.AgentAPI(version_cap='1.5').describe_vm(
                    context.make(), fixtures.HOST, 'vm-x', timeout=30)
            assert err.value.exc_type == 'UnsupportedVersion'

            # Create, merge and acknowledge as usual.
            vm, base = scenarios.online_create(dep, tmp_path)
            snaps = dep.ok('GET', '/v1/servers/srv1/snapshots')['snapshots']
            first = [s for s in snaps if s['name'] == 'before-upgrade'][0]
            body = dep.ok('DELETE', '/v1/snapshots/%s' % first['id'],
                          status=202)
            op = dep.wait_operation(body['operation']['id'])
            assert op['status'] == 'succeeded', op
            assert op['mode'] == 'merge'
    finally:
        rpc.cleanup()
        db.reset()
        agent_versions.forget()
