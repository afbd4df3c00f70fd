"""A model of what each layer of a disk must contain, and the invariants
checked after every operation of the deletion tests.

The disk is divided into 1 MiB slots; every write fills one slot with a
pattern.  Each snapshot must show exactly the slots written before it was
taken (on its branch); the live disk shows everything written since.
"""

import os
import subprocess

import sqlalchemy as sa

from agent import images
from livesnap_tools import testvm

MiB = 1024 * 1024
SLOTS = 8


def write_offline(image, pattern, slot):
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x%02x %d %d'
                    % (pattern, slot * MiB, MiB), image], check=True,
                   capture_output=True, timeout=60)


class DiskModel(object):
    """Expected content of the live disk and of every snapshot."""

    def __init__(self):
        self.live = {}
        self.snapshots = {}

    def write(self, slot, pattern):
        self.live[slot] = pattern

    def snapshot(self, snap_id):
        self.snapshots[snap_id] = dict(self.live)

    def revert(self, snap_id):
        self.live = dict(self.snapshots[snap_id])

    def forget(self, snap_id):
        self.snapshots.pop(snap_id, None)


def content_ok(image, expected):
    bad = []
    for slot in range(SLOTS):
        pattern = expected.get(slot, 0)
        if not testvm.read_pattern_ok(image, pattern, slot * MiB, MiB):
            bad.append((slot, pattern))
    return bad


def db_rows(database_url, server_id):
    """(disk row, [snapshot rows]) read straight from the database."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as c:
            disk = c.execute(sa.text(
                'SELECT id, active_image, snapshot_id, operation_id '
                'FROM disks WHERE server_id = :s'), {'s': server_id}).one()
            snaps = c.execute(sa.text(
                'SELECT id, parent_id, status, image FROM snapshots '
                'WHERE disk_id = :d'), {'d': disk.id}).all()
            return disk, snaps
    finally:
        engine.dispose()


def check_invariants(database_url, server_id, model, image_dir, vm=None):
    """Every layer holds what it should, every image is clean, and the
    files on disk and the records agree exactly.
    """
    if vm is not None and vm.alive():
        vm.flush()
    disk, snaps = db_rows(database_url, server_id)
    assert disk.operation_id is None, 'disk still locked'
    live_snaps = [s for s in snaps if s.status != 'error']
    assert all(s.status in ('available', 'deleted') for s in live_snaps), \
        [(s.id, s.status) for s in live_snaps]
    by_id = {s.id: s for s in live_snaps}
    # Content: the live disk and each snapshot the tenant can still see.
    assert content_ok(disk.active_image, model.live) == [], 'live disk'
    for s in live_snaps:
        if s.status == 'available':
            assert content_ok(s.image, model.snapshots[s.id]) == [], s.id
    # The chains on disk are the tree in the database.
    expected_backing = by_id[disk.snapshot_id].image \
        if disk.snapshot_id else None
    assert images.backing_file(disk.active_image) == expected_backing
    for s in live_snaps:
        parent = by_id[s.parent_id].image if s.parent_id else None
        assert images.backing_file(s.image) == parent, s.id
    # Every image is clean.
    for path in [disk.active_image] + [s.image for s in live_snaps]:
        images.check(path, force_share=True)
    # No file without a record, no record without a file.
    recorded = {disk.active_image} | {s.image for s in live_snaps}
    on_disk = {os.path.join(image_dir, n) for n in os.listdir(image_dir)
               if n.endswith('.qcow2')}
    assert on_disk == recorded, (on_disk - recorded, recorded - on_disk)
