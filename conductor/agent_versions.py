"""Rolling upgrades: which agent RPC version the conductor may send,
and what each host's agent can do.

Each agent reports the version of the agent RPC API it serves
(``agent.rpcapi.RPC_API_VERSION``) in its heartbeats, as
``info['rpc_version']``; an agent that reports none predates 1.4 and
counts as ``1.0``.  The conductor serves no agent older than
:data:`MINIMUM` (``conductor.hosts`` ignores its heartbeats, so its host
counts as down, and ``livesnap-status upgrade check`` names it).  The
conductor never sends a host more than it reported (nor more than the
conductor's own ``RPC_API_VERSION``), and the client's ``version_cap``
(:func:`client`) is the lowest version among the hosts that are up, as
cinder caps its RPC clients at the lowest version its services report.
So conductors are upgraded first: a new conductor keeps talking to the
old agents in their version, and sends what only new agents understand
once each has been upgraded and said so in a heartbeat (see
``docs/upgrading.md``).  The flows ask :func:`capabilities`, never a
version number, what a host's agent can do.

The versions are read from the hosts table at most every
:data:`REFRESH_INTERVAL` seconds per process (a heartbeat received by this
conductor updates its host at once), with a read that never waits for a
writer, so a task may be built and its version chosen inside a
transaction.  When the table cannot be read, the last versions read stay
in force; before any was read, the conductor's own version is used.
"""

import logging
import re
import threading
import time

from oslo_config import cfg
import sqlalchemy as sa

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: The version of an agent whose heartbeats carry none (before 1.4).
UNREPORTED = '1.0'

#: The oldest agent RPC API the conductor serves: locator tasks (1.4).
MINIMUM = '1.4'

#: What an agent can do, by the agent RPC version that brought it.
DESCRIBE_VM = 'describe_vm'
GROUPS = 'groups'
QUIESCE = 'quiesce'
CLONE = 'clone'
GROUP_QUIESCE = 'group_quiesce'
CAPABILITY_VERSIONS = {
    DESCRIBE_VM: '1.5',     # registration by domain name or UUID
    GROUPS: '1.6',          # create_snapshots: several disks, one pause
    QUIESCE: '1.7',         # create_snapshot's ``quiesce``
    CLONE: '1.8',           # clone_snapshot
    GROUP_QUIESCE: '1.9',   # create_snapshots's ``quiesce``
}

#: Seconds the versions read from the hosts table are used before they
#: are read again.
REFRESH_INTERVAL = 60.0

_VERSION = re.compile(r'[0-9]{1,4}\.[0-9]{1,4}')

_LOCK = threading.Lock()
#: host -> (reported version, last heartbeat); None until first read.
_HOSTS = None
#: time.monotonic() of the last read of the hosts table.
_READ_AT = 0.0
#: The engine read from (tests switch databases).
_READ_FROM = None

_HOSTS_QUERY = sa.select(models.Host.name, models.Host.last_heartbeat,
                         models.Host.info)


def parse(version):
    """``'1.3'`` -> ``(1, 3)``; anything unreadable counts as 1.0."""
    try:
        major, minor = str(version).split('.')
        return int(major), int(minor)
    except (TypeError, ValueError):
        return parse(UNREPORTED)


def reported_version(info):
    """The agent RPC version in a heartbeat's ``info`` (``1.0`` if none)."""
    version = (info or {}).get('rpc_version')
    if isinstance(version, str) and _VERSION.fullmatch(version):
        return version
    return UNREPORTED


def supported(version):
    """True if the conductor serves an agent of RPC API ``version``."""
    return parse(version) >= parse(MINIMUM)


def _lowest(versions):
    return min(versions, key=parse)


def refresh():
    """Read every host's reported version from the hosts table now.

    :raises: whatever the database raises (the versions stay as they were).
    """
    global _HOSTS, _READ_AT, _READ_FROM
    engine = db.get_engine()
    with db.read_never_waiting() as conn:
        rows = conn.execute(_HOSTS_QUERY).all()
    hosts = {row.name: (reported_version(row.info), row.last_heartbeat)
             for row in rows}
    with _LOCK:
        before = _HOSTS if _READ_FROM is engine else None
        _HOSTS = hosts
        _READ_AT = time.monotonic()
        _READ_FROM = engine
    if before is None:
        LOG.info('Agent RPC API versions of the hosts: %(hosts)s; the '
                 'conductor serves %(ours)s',
                 {'hosts': ', '.join('%s %s' % (h, v) for h, (v, _)
                                     in sorted(hosts.items())) or 'none',
                  'ours': agent_rpcapi.RPC_API_VERSION})
        return
    for host, (version, _) in sorted(hosts.items()):
        if version != before.get(host, (None, None))[0]:
            _log_change(host, version)


def _log_change(host, version):
    LOG.info('Agent of %(host)s serves RPC API %(version)s; messages to '
             'it are pinned to %(cap)s',
             {'host': host, 'version': version,
              'cap': _lowest([version, agent_rpcapi.RPC_API_VERSION])})


def heard_from(host, info):
    """A heartbeat from ``host`` was recorded: use its version at once in
    this process (other conductors read it within REFRESH_INTERVAL).
    """
    version = reported_version(info)
    with _LOCK:
        if _HOSTS is None:
            return
        was = _HOSTS.get(host, (None, None))[0]
        _HOSTS[host] = (version, models.utcnow())
    if version != was:
        _log_change(host, version)


def forget():
    """Forget what was read (tests; the next use reads the table)."""
    global _HOSTS, _READ_AT, _READ_FROM
    with _LOCK:
        _HOSTS = None
        _READ_AT = 0.0
        _READ_FROM = None


def _hosts():
    """The versions read, read again first if they are older than
    REFRESH_INTERVAL; None if they were never read and cannot be.
    """
    try:
        if _HOSTS is None or db.get_engine() is not _READ_FROM or \
                time.monotonic() - _READ_AT > REFRESH_INTERVAL:
            refresh()
    except Exception as exc:
        LOG.warning('Could not read the agents\' RPC versions: '
                    '%(error)s; using %(what)s',
                    {'error': str(exc).splitlines()[0] if str(exc)
                     else exc.__class__.__name__,
                     'what': 'the last ones read' if _HOSTS is not None
                     else 'the conductor\'s own'})
    with _LOCK:
        return dict(_HOSTS) if _HOSTS is not None else None


def version_cap(host=None):
    """The highest agent RPC version the conductor may send.

    :param host: the one host a message goes to: its own reported version
        (or, for a host that never sent a heartbeat, the lowest of all).
        None: the lowest version among the hosts that are up (all known
        hosts if none is up).
    Hosts whose agents are older than :data:`MINIMUM` are left out of the
    lowest (nothing is sent to them); asked about one, the answer is its
    own version, so every task to it is refused before it is sent.

    :returns: a version string, never above ``agent.rpcapi.RPC_API_VERSION``.
    """
    ours = agent_rpcapi.RPC_API_VERSION
    hosts = _hosts()
    if not hosts:
        return ours
    if host is not None and host in hosts:
        return _lowest([hosts[host][0], ours])
    hosts = {name: (version, last) for name, (version, last) in hosts.items()
             if supported(version)}
    if not hosts:
        return ours
    now = models.utcnow()
    up = [version for version, last in hosts.values()
          if last is not None and
          (now - last).total_seconds() <= CONF.conductor.host_down_time]
    return _lowest((up or [v for v, _ in hosts.values()]) + [ours])


def capabilities(host):
    """What the agent of ``host`` can be asked to do, by the version it
    reported (:func:`version_cap`): a frozenset of the names in
    :data:`CAPABILITY_VERSIONS` (:data:`QUIESCE`, :data:`CLONE`, ...).
    Empty for an agent older than :data:`MINIMUM`.
    """
    cap = parse(version_cap(host))
    if cap < parse(MINIMUM):
        return frozenset()
    return frozenset(name for name, version in CAPABILITY_VERSIONS.items()
                     if parse(version) <= cap)


def client():
    """The conductor's client of the agents, pinned as above: a message
    to a host never carries a version above the one that host reported,
    and the client's ``version_cap`` is :func:`version_cap`.
    """
    return agent_rpcapi.AgentAPI(version_cap=version_cap(),
                                 host_cap=version_cap)
