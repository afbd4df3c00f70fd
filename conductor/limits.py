"""Limits checked before a snapshot is created.

A long backing chain slows every read of the disk (each miss walks the
chain), so each disk's chain depth is bounded; each project's number of
snapshots is bounded by a quota.
"""

import sqlalchemy as sa
from oslo_config import cfg

from conductor.db import models
from conductor import exception
from conductor import tree

CONF = cfg.CONF


def check_create(session, server, disk):
    """:raises: Conflict (chain too deep) or QuotaExceeded."""
    limit = CONF.conductor.max_chain_depth
    if limit:  # the depth costs a read of the disk's whole tree
        current = tree.depth(session, disk)
        if current + 1 > limit:
            raise exception.ChainTooDeep(disk=disk.name, depth=current,
                                         limit=limit)
    quota = CONF.conductor.snapshot_quota
    if quota >= 0:
        used = session.scalar(
            sa.select(sa.func.count()).select_from(models.Snapshot)
            .where(models.Snapshot.project_id == server.project_id)
            .where(models.Snapshot.status.in_(
                ('creating', 'available', 'deleting'))))
        if used + 1 > quota:
            raise exception.QuotaExceeded(
                'Project %s has %d snapshots, its quota is %d; delete some '
                'first.' % (server.project_id, used, quota))
