"""Host liveness: agents send heartbeats, the conductor records them.

A host whose last heartbeat is older than ``[conductor] host_down_time``
is down; the policy refuses new work for it with 503.  A heartbeat carries
the agent's RPC API version (``info['rpc_version']``), to which the
conductor pins what it sends (``conductor.agent_versions``).  The
heartbeats of an agent older than ``agent_versions.MINIMUM`` (or of one
that reports no version) are ignored, with an error in the log: its host
counts as down until its agent is upgraded.
"""

import datetime
import logging

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import exception

LOG = logging.getLogger(__name__)


def record_heartbeat(host, info):
    """Record that the agent on ``host`` is alive, with what it reported
    (image dirs, start time, package and RPC API versions).

    An agent older than ``agent_versions.MINIMUM`` is not recorded: the
    conductor cannot send it a task it understands.
    """
    version = agent_versions.reported_version(info)
    if not agent_versions.supported(version):
        LOG.error('Ignoring the heartbeat of the agent on %(host)s: it '
                  'serves agent RPC API %(version)s, older than %(min)s, '
                  'the oldest this conductor serves; the host counts as '
                  'down until its agent is upgraded (see '
                  'docs/upgrading.md)',
                  {'host': host, 'version': version,
                   'min': agent_versions.MINIMUM})
        return
    started_at = None
    if info and info.get('started_at'):
        started_at = datetime.datetime.fromtimestamp(
            info['started_at'], datetime.timezone.utc).replace(tzinfo=None)
    db.host_heartbeat(host, info=info, started_at=started_at)
    agent_versions.heard_from(host, info)
    LOG.debug('Heartbeat from %(host)s', {'host': host})


def ensure_alive(session, host):
    """:raises: HostDown if ``host``'s agent has not reported lately
        (AgentUnsupported, a HostDown, if the last version it reported is
        older than ``agent_versions.MINIMUM``).
    """
    if not db.host_is_alive(session, host):
        found = session.get(models.Host, host)
        if found is not None:
            version = agent_versions.reported_version(found.info)
            if not agent_versions.supported(version):
                raise exception.AgentUnsupported(
                    host=host, version=version,
                    minimum=agent_versions.MINIMUM)
        raise exception.HostDown(host=host)
