"""The snapshot tree of one disk, as the policy sees it.

Nodes are snapshots; the disk's live (active) image is a leaf that sits on
``disk.snapshot_id`` and counts as a child of that snapshot.  Snapshots in
``error`` hold no data (their create was rolled back) and are nobody's
child.
"""

from conductor.db import api as db

ACTIVE = 'active'
#: statuses of snapshots that hold a layer of the disk
LIVE_STATUSES = ('creating', 'available', 'deleting', 'deleted')


class Child(object):
    """One child of a node: another snapshot, or the disk's live image."""

    def __init__(self, snapshot=None, disk=None):
        self.snapshot = snapshot
        self.disk = disk

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
    return kids


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
    first: those left with one child or none."""
    snaps = db.snapshots_of_disk(session, disk.id)
    by_id = {x.id: x for x in snaps}

    def level(x):
        n = 0
        while x.parent_id in by_id and n <= len(snaps):
            x, n = by_id[x.parent_id], n + 1
        return n

    ready = [x for x in snaps if x.status == 'deleted'
             and len(children(session, x, disk, snaps)) <= 1]
    return sorted(ready, key=level, reverse=True)
