"""Host liveness: agents send heartbeats, the conductor records them.

A host whose last heartbeat is older than ``[conductor] host_down_time``
is down; the policy refuses new work for it with 503.  A heartbeat carries
the agent's RPC API version (``info['rpc_version']``), to which the
conductor pins what it sends (``conductor.agent_versions``).
"""

import datetime
import logging

from conductor import agent_versions
from conductor.db import api as db
from conductor import exception

LOG = logging.getLogger(__name__)


def record_heartbeat(host, info):
    """Record that the agent on ``host`` is alive, with what it reported
    (image dirs, start time, package and RPC API versions)."""
    started_at = None
    if info and info.get('started_at'):
        started_at = datetime.datetime.fromtimestamp(
            info['started_at'], datetime.timezone.utc).replace(tzinfo=None)
    db.host_heartbeat(host, info=info, started_at=started_at)
    agent_versions.heard_from(host, info)
    LOG.debug('Heartbeat from %(host)s', {'host': host})


def ensure_alive(session, host):
    """:raises: HostDown if ``host``'s agent has not reported lately."""
    if not db.host_is_alive(session, host):
        raise exception.HostDown(host=host)
