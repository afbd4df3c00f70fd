"""The conductor's periodic tasks.

Every conductor runs them; each is safe to run concurrently with other
conductors because every state change goes through the disk's lock or a
row lock.
"""

import logging
import threading

from oslo_config import cfg
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import deadlines
from conductor import dispatch
from conductor import idempotency
from conductor import schedule_runner
from conductor import states
from livesnap import context

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def finish_deferred_deletions():
    """Start finishing logically deleted snapshots that now can be."""
    with db.transaction() as s:
        disk_ids = list(s.scalars(
            sa.select(models.Snapshot.disk_id)
            .where(models.Snapshot.status == states.DELETED).distinct()))
    started = 0
    for disk_id in disk_ids:
        if dispatch.finish_deferred(context.make(), disk_id):
            started += 1
    return started


TASKS = [deadlines.check_overdue, dispatch.start_waiting,
         finish_deferred_deletions, schedule_runner.run_periodic,
         idempotency.purge_expired, dispatch.advance_server_deletions]


class PeriodicRunner(object):

    def __init__(self, interval=None, tasks=None):
        self.interval = interval or CONF.conductor.periodic_interval
        self.tasks = tasks or TASKS
        self._stop = threading.Event()
        self._thread = None

    def run_once(self):
        for task in self.tasks:
            try:
                task()
            except Exception:
                LOG.exception('Periodic task %(task)s failed',
                              {'task': task.__name__})

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.run_once()

    def start(self):
        self._thread = threading.Thread(target=self._loop, name='periodic',
                                        daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
