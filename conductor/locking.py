"""The disk lock: who may change a disk's tree, and when.

Every change to a disk's snapshot tree is made by one operation that holds
the disk's lock (``disks.operation_id``), taken with a compare-and-swap
UPDATE (:func:`lock_disk`) so any number of conductors can race for it.
Policy decisions are made on rows read after the disk's row is locked
(:func:`disk_for_update`, ``SELECT ... FOR UPDATE``): what is read after
it cannot change until the transaction ends.  A tenant's request that
finds the disk busy with the conductor's own (deferred) work waits as
``pending`` and starts first when the disk frees; one that finds it busy
with another tenant operation is refused (DiskBusy): see
``operations.may_start_now``, which decides on a disk read here.  A
project's quota decisions are serialised by :func:`lock_project`.
"""

import sqlalchemy as sa

from conductor.db import models


def lock_disk(session, disk_id, operation_id):
    """Take the disk's lock for ``operation_id``; compare-and-swap.

    :returns: True if the lock is now held by ``operation_id``.
    """
    result = session.execute(
        sa.update(models.Disk)
        .where(models.Disk.id == disk_id)
        .where(sa.or_(models.Disk.operation_id.is_(None),
                      models.Disk.operation_id == operation_id))
        .values(operation_id=operation_id)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def unlock_disk(session, disk_id, operation_id):
    """Release the disk's lock if ``operation_id`` still holds it."""
    session.execute(
        sa.update(models.Disk)
        .where(models.Disk.id == disk_id)
        .where(models.Disk.operation_id == operation_id)
        .values(operation_id=None)
        .execution_options(synchronize_session=False))


def disk_for_update(session, disk_id):
    """Lock the disk's row (``SELECT ... FOR UPDATE``) and re-read it.

    Every object this session loaded before is expired first, so what is
    read from here on (the snapshots, the live image's position) is the
    newest committed state, which nobody can change while the row is held.
    :returns: the disk, or None if it does not exist.
    """
    session.expire_all()
    return session.get(models.Disk, disk_id, with_for_update=True,
                       populate_existing=True)


def lock_project(session, project_id):
    """Serialise the quota decisions of one project: lock its servers'
    rows (in a fixed order) until the transaction ends.
    """
    session.execute(
        sa.select(models.Server.id)
        .where(models.Server.project_id == project_id)
        .order_by(models.Server.id).with_for_update())


def unlock_others(session, op):
    """Release the locks ``op`` holds besides its own disk's (which
    ``operations`` releases).
    """
    for disk in session.scalars(sa.select(models.Disk).where(
            models.Disk.operation_id == op.id,
            models.Disk.id != op.disk_id)).all():
        unlock_disk(session, disk.id, op.id)
