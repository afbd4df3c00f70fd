"""Lean reads for the REST API's hot GET requests.

Tenants poll ``GET /v1/operations/{id}`` and list snapshot trees far more
often than they change anything.  These read with SQLAlchemy Core on a
``db.reader()`` connection: one statement each, no ORM identity map, no
transaction on PostgreSQL and MySQL.  The rows have the attribute names
of the models, so ``conductor.api.views`` renders them unchanged.  Each
statement is one consistent read: the snapshots of a tree come with their
disk's current pointer from the same statement.
"""

import sqlalchemy as sa

from conductor.db import models
from conductor import exception
from conductor import states

_OPS = models.Operation.__table__
_DISKS = models.Disk.__table__
_SERVERS = models.Server.__table__
_SNAPS = models.Snapshot.__table__

_OPERATION = (
    sa.select(_OPS, _DISKS.c.name.label('disk_name'))
    .select_from(_OPS.outerjoin(_DISKS, _DISKS.c.id == _OPS.c.disk_id))
    .where(_OPS.c.id == sa.bindparam('operation_id')))

_SERVER_PROJECT = sa.select(_SERVERS.c.project_id).where(
    _SERVERS.c.id == sa.bindparam('server_id'))

_TREE = (
    sa.select(_SNAPS,
              _DISKS.c.name.label('disk_name'),
              _DISKS.c.server_id.label('disk_server_id'),
              _DISKS.c.snapshot_id.label('disk_snapshot_id'))
    .select_from(_SNAPS.join(_DISKS, _DISKS.c.id == _SNAPS.c.disk_id))
    .where(_DISKS.c.server_id == sa.bindparam('server_id'))
    .order_by(_SNAPS.c.created_at, _SNAPS.c.id))


class DiskRef(object):
    """The disk fields ``views.snapshot`` needs, from a tree row."""

    __slots__ = ('name', 'server_id', 'snapshot_id')

    def __init__(self, row):
        self.name = row.disk_name
        self.server_id = row.disk_server_id
        self.snapshot_id = row.disk_snapshot_id


def operation(conn, operation_id, project_id=None):
    """The operation's row, with ``disk_name``.

    :param project_id: the caller's scope; None means every project.
    :raises: NotFound if it does not exist or belongs to another project.
    """
    row = conn.execute(_OPERATION, {'operation_id': operation_id}).first()
    if row is None or (project_id is not None
                       and row.project_id != project_id):
        raise exception.NotFound('Operation %s could not be found.'
                                 % operation_id)
    return row


def server_project(conn, server_id, project_id=None):
    """The project owning the server.

    :raises: NotFound if it does not exist or belongs to another project.
    """
    owner = conn.execute(_SERVER_PROJECT, {'server_id': server_id}).scalar()
    if owner is None or (project_id is not None and owner != project_id):
        raise exception.NotFound('Server %s could not be found.'
                                 % server_id)
    return owner


def snapshot_tree(conn, server_id, include_deleted=False):
    """``[(snapshot row, DiskRef)]`` of every disk of the server, oldest
    first, in one statement.
    """
    query = _TREE
    if not include_deleted:
        query = query.where(_SNAPS.c.status != states.DELETED)
    return [(row, DiskRef(row))
            for row in conn.execute(query, {'server_id': server_id})]
