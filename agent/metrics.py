"""The agent's Prometheus metrics (served on ``[metrics] agent_port``).

Counted by the agent that did the work, once per run of a task (a report
re-sent is not counted again), labelled with the agent's host:
``livesnap_agent_operations_total``, ``livesnap_agent_pause_seconds``
(QEMU's own pause window), ``livesnap_agent_merge_seconds``; and, read
from the journal when Prometheus scrapes, ``livesnap_agent_journal_entries``
(operations started and not ended, reports not yet acknowledged).
"""

import prometheus_client
from prometheus_client import core

from livesnap import metrics as common

OPERATIONS = prometheus_client.Counter(
    'livesnap_agent_operations', 'Tasks this agent ran to the end, by '
    'action, mode and status.', ['host', 'action', 'mode', 'status'])
PAUSE = prometheus_client.Histogram(
    'livesnap_agent_pause_seconds', 'Time a VM\'s I/O was paused by a task, '
    'on QEMU\'s clock (STOP to RESUME events).', ['host', 'action'],
    buckets=common.PAUSE_BUCKETS)
AGENT_PAUSE = prometheus_client.Histogram(
    'livesnap_agent_pause_seen_seconds', 'The same pauses as the agent saw '
    'them (from sending the pause to the resume\'s answer).',
    ['host', 'action'], buckets=common.PAUSE_BUCKETS)
MERGE_SECONDS = prometheus_client.Histogram(
    'livesnap_agent_merge_seconds', 'Duration of the merge step of merge '
    'deletes.', ['host', 'status'], buckets=common.MERGE_BUCKETS)


def task_done(host, action, task, report):
    """Count a task that ended with ``report`` (the one sent)."""
    mode = (task.get('mode') if isinstance(task, dict) else None) or ''
    status = report.get('status') or 'failed'
    OPERATIONS.labels(host, action, mode, status).inc()
    if report.get('pause_ms') is not None:
        PAUSE.labels(host, action).observe(report['pause_ms'] / 1000.0)
    if report.get('agent_pause_ms') is not None:
        AGENT_PAUSE.labels(host, action).observe(
            report['agent_pause_ms'] / 1000.0)
    merge_ms = [s.get('duration_ms') for s in report.get('steps') or ()
                if isinstance(s, dict) and s.get('name') == 'merge' and
                isinstance(s.get('duration_ms'), (int, float))]
    if merge_ms:
        MERGE_SECONDS.labels(host, status).observe(sum(merge_ms) / 1000.0)


class JournalCollector(object):
    """``livesnap_agent_journal_entries{host, state}`` at scrape time."""

    def __init__(self, host, journal):
        self.host = host
        self.journal = journal

    def describe(self):
        return []

    def collect(self):
        family = core.GaugeMetricFamily(
            'livesnap_agent_journal_entries', 'Live journal entries: '
            'operations started and not ended (unfinished), reports the '
            'conductor has not acknowledged (unacknowledged).',
            labels=['host', 'state'])
        try:
            entries = self.journal.entries()
        except OSError:
            yield family
            return
        unfinished = sum(1 for e in entries
                         if e.get('state') not in ('done', 'abandoned'))
        unacked = sum(1 for e in entries if e.get('state') == 'done' and
                      e.get('acked') is False)
        family.add_metric([self.host, 'unfinished'], unfinished)
        family.add_metric([self.host, 'unacknowledged'], unacked)
        yield family


def register_journal(host, journal):
    """Add the journal gauge to the default registry; returns the
    collector (to unregister).
    """
    collector = JournalCollector(host, journal)
    prometheus_client.REGISTRY.register(collector)
    return collector


def unregister(collector):
    try:
        prometheus_client.REGISTRY.unregister(collector)
    except KeyError:
        pass
