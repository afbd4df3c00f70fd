"""Limits checked before a snapshot is created.

A long backing chain slows every read of the disk (each miss walks the
chain), so each disk's chain depth is bounded; each project's number of
snapshots is bounded by a quota.
"""

from oslo_config import cfg
import sqlalchemy as sa

from conductor.db import models
from conductor import exception
from conductor import locking
from conductor import states
from conductor import tree

CONF = cfg.CONF


def check_create(session, server, disk, snapshot_id=None, depth=True):
    """Check the limits for one more snapshot of ``disk``.

    The caller holds the disk's row lock (the chain cannot change); the
    project's servers are locked here, so two creates of one project on
    different disks cannot both take its last unit of quota.
    :param snapshot_id: the snapshot being created, if already recorded
        (it is not counted twice).
    :param depth: also check the chain depth.
    :raises: ChainTooDeep or QuotaExceeded.
    """
    limit = CONF.conductor.max_chain_depth
    if depth and limit:  # the depth costs a read of the disk's whole tree
        current = tree.depth(session, disk)
        if current + 1 > limit:
            raise exception.ChainTooDeep(disk=disk.name, depth=current,
                                         limit=limit)
    quota = CONF.conductor.snapshot_quota
    if quota >= 0:
        locking.lock_project(session, server.project_id)
        query = (sa.select(sa.func.count()).select_from(models.Snapshot)
                 .where(models.Snapshot.project_id == server.project_id)
                 .where(models.Snapshot.status.in_(
                     (states.CREATING, states.AVAILABLE,
                      states.DELETING))))
        if snapshot_id is not None:
            query = query.where(models.Snapshot.id != snapshot_id)
        used = session.scalar(query)
        if used + 1 > quota:
            raise exception.QuotaExceeded(
                'Project %s has %d snapshots, its quota is %d; delete some '
                'first.' % (server.project_id, used, quota))
