"""Each RPC server serves the version its client module declares: the
managers take ``RPC_API_VERSION`` from their rpcapi modules, whose version
history ends with it, and no client call asks for a newer one."""

import inspect
import re

import pytest

from agent import manager as agent_manager
from agent import rpcapi as agent_rpcapi
from conductor import manager as conductor_manager
from conductor import rpcapi as conductor_rpcapi

PAIRS = [
    pytest.param(agent_manager.AgentManager, agent_rpcapi, id='agent'),
    pytest.param(conductor_manager.ConductorManager, conductor_rpcapi,
                 id='conductor'),
]


def _version(text):
    return tuple(int(x) for x in text.split('.'))


@pytest.mark.parametrize('manager,rpcapi', PAIRS)
def test_manager_serves_the_rpcapi_version(manager, rpcapi):
    assert manager.target.version == rpcapi.RPC_API_VERSION


@pytest.mark.parametrize('manager,rpcapi', PAIRS)
def test_history_ends_with_the_version(manager, rpcapi):
    history = re.findall(r'^\* (\d+\.\d+) - ', rpcapi.__doc__, re.M)
    assert history, 'no version history in %s' % rpcapi.__name__
    assert history == sorted(history, key=_version)
    assert history[-1] == rpcapi.RPC_API_VERSION


def test_capabilities_are_versions_of_the_history():
    """What the flows ask (``agent_versions.capabilities``) maps to agent
    RPC versions between the minimum and the newest.
    """
    from conductor import agent_versions
    history = re.findall(r'^\* (\d+\.\d+) - ', agent_rpcapi.__doc__, re.M)
    assert agent_versions.MINIMUM in history
    for version in agent_versions.CAPABILITY_VERSIONS.values():
        assert version in history
        assert _version(agent_versions.MINIMUM) < _version(version) <= \
            _version(agent_rpcapi.RPC_API_VERSION)


@pytest.mark.parametrize('manager,rpcapi', PAIRS)
def test_no_call_asks_for_a_newer_version(manager, rpcapi):
    source = inspect.getsource(rpcapi)
    asked = re.findall(r"version=['\"](\d+\.\d+)['\"]", source)
    asked += re.findall(r"can_send_version\(\s*['\"](\d+\.\d+)['\"]",
                        source)
    assert asked
    newest = _version(rpcapi.RPC_API_VERSION)
    assert all(_version(v) <= newest for v in asked), asked
