"""The conductor's Prometheus metrics.

Two kinds:

* Counters and histograms of the operations this conductor saw end, fed by
  ``conductor.notifications`` once the ending is committed (so each ending
  is counted once, by the conductor that applied it; sum them over the
  conductors): ``livesnap_operations_total``, ``livesnap_pause_seconds``
  (QEMU's own pause window), ``livesnap_merge_bytes_total`` and
  ``livesnap_merge_seconds``.
* Gauges read from the shared database when Prometheus scrapes
  (:class:`DatabaseCollector`): snapshots and the deepest chain per
  project, deferred deletions waiting, hosts up, operations in progress.
  Every conductor reports the same values; use ``max`` over them.  Three
  light queries per scrape (two ``GROUP BY`` and the snapshots' parent
  links), none of them in a transaction.
"""

import datetime
import logging
import threading

from oslo_config import cfg
import prometheus_client
from prometheus_client import core
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import states
from livesnap import metrics as common

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

PAUSE_BUCKETS = common.PAUSE_BUCKETS
MERGE_BUCKETS = common.MERGE_BUCKETS

OPERATIONS = prometheus_client.Counter(
    'livesnap_operations', 'Operations ended, by action, mode, status and '
    'who asked (tenant or conductor).',
    ['action', 'mode', 'status', 'requested_by'])
PAUSE = prometheus_client.Histogram(
    'livesnap_pause_seconds', 'Time a VM\'s I/O was paused by an operation, '
    'on QEMU\'s clock (STOP to RESUME events).', ['action', 'mode'],
    buckets=PAUSE_BUCKETS)
MERGE_BYTES = prometheus_client.Counter(
    'livesnap_merge_bytes', 'Bytes of snapshot images merged into their '
    'child by successful merge deletes (the snapshot\'s allocated size).')
MERGE_SECONDS = prometheus_client.Histogram(
    'livesnap_merge_seconds', 'Duration of the merge step of merge deletes.',
    ['status'], buckets=MERGE_BUCKETS)


def operation_ended(data):
    """Count an ended operation (the ``livesnap_object.data`` of its
    notification).
    """
    action = data['action']
    mode = data.get('mode') or ''
    OPERATIONS.labels(action, mode, data['status'],
                      data.get('requested_by') or 'tenant').inc()
    if data.get('pause_ms') is not None:
        PAUSE.labels(action, mode).observe(data['pause_ms'] / 1000.0)
    if mode != 'merge':
        return
    merge_ms = [s['duration_ms'] for s in data.get('steps') or ()
                if s.get('name') == 'merge' and
                isinstance(s.get('duration_ms'), (int, float))]
    if merge_ms:
        MERGE_SECONDS.labels(data['status']).observe(sum(merge_ms) / 1000.0)
    if data['status'] == states.SUCCEEDED and \
            data.get('snapshot_size_bytes'):
        MERGE_BYTES.inc(data['snapshot_size_bytes'])


def chain_depths(links, tips):
    """The number of snapshots under each tip, following parent links.

    :param links: {snapshot id: parent id or None}
    :param tips: snapshot ids the live images sit on (None: no snapshot)
    :returns: a list of depths, one per tip.
    """
    depths = []
    for tip in tips:
        depth = 0
        seen = set()
        node = tip
        while node is not None and node in links and node not in seen:
            seen.add(node)
            depth += 1
            node = links[node]
        depths.append(depth)
    return depths


class DatabaseCollector(object):
    """Gauges computed from the database at scrape time."""

    def describe(self):
        # Nothing to check at registration: no query before a scrape.
        return []

    def collect(self):
        try:
            values = self._read()
        except Exception as exc:
            LOG.warning('Metrics from the database unavailable: %(error)s',
                        {'error': str(exc).splitlines()[0] if str(exc)
                         else exc.__class__.__name__})
            up = core.GaugeMetricFamily(
                'livesnap_database_up', 'Whether the conductor could read '
                'the database for these metrics.')
            up.add_metric([], 0)
            yield up
            return
        snapshots, depth, deferred, hosts, active = values
        up = core.GaugeMetricFamily(
            'livesnap_database_up', 'Whether the conductor could read the '
            'database for these metrics.')
        up.add_metric([], 1)
        yield up
        family = core.GaugeMetricFamily(
            'livesnap_snapshots', 'Snapshots kept, by project and status '
            '(deleted: logically deleted, waiting to be finished).',
            labels=['project_id', 'status'])
        for (project, status), n in sorted(snapshots.items()):
            family.add_metric([project, status], n)
        yield family
        family = core.GaugeMetricFamily(
            'livesnap_chain_depth_max', 'Most snapshot layers under one '
            'live image, by project.', labels=['project_id'])
        for project, n in sorted(depth.items()):
            family.add_metric([project], n)
        yield family
        family = core.GaugeMetricFamily(
            'livesnap_deferred_deletions', 'Logically deleted snapshots '
            'waiting for their children to drop to one or none.')
        family.add_metric([], deferred)
        yield family
        family = core.GaugeMetricFamily(
            'livesnap_hosts', 'Agent hosts known, by whether they send '
            'heartbeats ([conductor] host_down_time).', labels=['state'])
        family.add_metric(['up'], hosts[0])
        family.add_metric(['down'], hosts[1])
        yield family
        family = core.GaugeMetricFamily(
            'livesnap_operations_active', 'Operations not ended, by action '
            'and status (pending or running).', labels=['action', 'status'])
        for (action, status), n in sorted(active.items()):
            family.add_metric([action, status], n)
        yield family

    @staticmethod
    def _read():
        snap = models.Snapshot.__table__
        disk = models.Disk.__table__
        server = models.Server.__table__
        host = models.Host.__table__
        op = models.Operation.__table__
        with db.reader() as conn:
            snapshots = {
                (row[0], row[1]): row[2] for row in conn.execute(
                    sa.select(snap.c.project_id, snap.c.status,
                              sa.func.count()).group_by(
                        snap.c.project_id, snap.c.status))}
            links = dict(conn.execute(sa.select(snap.c.id,
                                                snap.c.parent_id)).all())
            tips = conn.execute(
                sa.select(server.c.project_id, disk.c.snapshot_id)
                .join(server, server.c.id == disk.c.server_id)).all()
            cutoff = models.utcnow() - datetime.timedelta(
                seconds=CONF.conductor.host_down_time)
            beats = [row[0] for row in conn.execute(
                sa.select(host.c.last_heartbeat))]
            active = {
                (row[0], row[1]): row[2] for row in conn.execute(
                    sa.select(op.c.action, op.c.status, sa.func.count())
                    .where(op.c.status.in_(states.ACTIVE))
                    .group_by(op.c.action, op.c.status))}
        depth = {}
        for (project, tip), n in zip(tips, chain_depths(
                links, [t[1] for t in tips])):
            depth[project] = max(depth.get(project, 0), n)
        deferred = sum(n for (p, s), n in snapshots.items()
                       if s == states.DELETED)
        up = sum(1 for b in beats if b is not None and b >= cutoff)
        return snapshots, depth, deferred, (up, len(beats) - up), active


_registered = False
_lock = threading.Lock()


def register():
    """Add the database gauges to the default registry (once a process)."""
    global _registered
    with _lock:
        if not _registered:
            prometheus_client.REGISTRY.register(DatabaseCollector())
            _registered = True
