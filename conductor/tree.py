"""The snapshot tree of one disk, as the policy sees it.

Nodes are snapshots; the disk's live (active) image is a leaf that sits on
``disk.snapshot_id`` and counts as a child of that snapshot.  Snapshots in
``error`` hold no data (their create was rolled back) and are nobody's
child.  A linked clone (another disk made from a snapshot as a layer on
it, ``conductor.clones``) is a child of that snapshot too; a snapshot
with one is never merged nor deleted physically (``has_clones``).
"""

import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import states

ACTIVE = 'active'
#: statuses of snapshots that hold a layer of the disk
LIVE_STATUSES = (states.CREATING, states.AVAILABLE, states.DELETING,
                 states.DELETED)


class Child(object):
    """One child of a node: another snapshot, or the disk's live image."""

    def __init__(self, snapshot=None, disk=None, clone=False):
        self.snapshot = snapshot
        self.disk = disk
        #: ``disk`` is another disk, a linked clone of the node
        self.is_clone = clone

    @property
    def is_active(self):
        return self.snapshot is None

    @property
    def locator(self):
        """The disk's locator for the live layer, else the snapshot's."""
        return self.disk.locator if self.is_active else \
            self.snapshot.locator


def children(session, snap, disk, snaps=None):
    """The children of ``snap`` (the child-count rule counts these)."""
    snaps = db.snapshots_of_disk(session, disk.id) if snaps is None else snaps
    kids = [Child(snapshot=x) for x in snaps
            if x.parent_id == snap.id and x.status in LIVE_STATUSES]
    if disk.snapshot_id == snap.id:
        kids.append(Child(disk=disk))
    kids.extend(Child(disk=d, clone=True)
                for d in linked_clones(session, snap))
    return kids


def linked_clones(session, snap):
    """The disks made from ``snap`` as layers on it."""
    return session.scalars(
        sa.select(models.Disk)
        .where(models.Disk.clone_of == snap.id)
        .where(models.Disk.clone_mode == 'linked')
        .order_by(models.Disk.id)).all()


def origin_locator(session, disk):
    """The layer a linked clone disk's lowest layer is built on (its
    source snapshot's), or None for any other disk.
    """
    if disk.clone_mode != 'linked' or not disk.clone_of:
        return None
    origin = session.get(models.Snapshot, disk.clone_of)
    return origin.locator if origin is not None else None


def has_clones(kids):
    """True if one of ``kids`` (``children``) is a linked clone."""
    return any(k.is_clone for k in kids)


def depth(session, disk, snaps=None):
    """Layers under the live image: the length of its backing chain."""
    snaps = db.snapshots_of_disk(session, disk.id) if snaps is None else snaps
    by_id = {x.id: x for x in snaps}
    n, node = 0, by_id.get(disk.snapshot_id)
    while node is not None and n <= len(snaps):
        n += 1
        node = by_id.get(node.parent_id)
    return n


def deferred(session, disk):
    """Logically deleted snapshots that can now be finished, deepest
    first: those left with one child or none.
    """
    snaps = db.snapshots_of_disk(session, disk.id)
    by_id = {x.id: x for x in snaps}

    def level(x):
        n = 0
        while x.parent_id in by_id and n <= len(snaps):
            x, n = by_id[x.parent_id], n + 1
        return n

    ready = []
    for x in snaps:
        if x.status == states.DELETED:
            kids = children(session, x, disk, snaps)
            if len(kids) <= 1 and not has_clones(kids):
                ready.append(x)
    return sorted(ready, key=level, reverse=True)
