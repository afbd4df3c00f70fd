"""The conductor's tables.

The database is the only place policy state lives, so several conductors
can share it.  A disk's ``operation_id`` is its lock: it is taken with a
compare-and-swap UPDATE and released when the operation ends.

A disk and a snapshot are found on their host by a *locator*, the
driver-tagged JSON object the agent's driver made (``agent.driver.base``):
the conductor stores it as it comes and compares it whole.  The older
columns ``disks.active_image`` and ``snapshots.image`` are kept as a copy
of the locator's ``path`` (set when the locator is), for the admins' views
and for tools that read the tables.
"""

import datetime

import sqlalchemy as sa
from sqlalchemy import orm


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Base(orm.DeclarativeBase):
    pass


class Host(Base):
    __tablename__ = 'hosts'

    name = sa.Column(sa.String(255), primary_key=True)
    last_heartbeat = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    started_at = sa.Column(sa.DateTime, nullable=True)
    info = sa.Column(sa.JSON, nullable=True)


class Server(Base):
    __tablename__ = 'servers'

    id = sa.Column(sa.String(64), primary_key=True)
    name = sa.Column(sa.String(255), nullable=False)
    project_id = sa.Column(sa.String(64), nullable=False, index=True)
    host = sa.Column(sa.String(255), nullable=False, index=True)
    qmp_socket = sa.Column(sa.String(1024), nullable=True)
    # The agent driver that runs it ("qemu"); its disks' locators say so.
    driver = sa.Column(sa.String(32), nullable=False, default='qemu',
                       server_default='qemu')
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)

    disks = orm.relationship('Disk', back_populates='server',
                             order_by='Disk.name', lazy='selectin')


class Disk(Base):
    __tablename__ = 'disks'
    __table_args__ = (
        sa.UniqueConstraint('server_id', 'name',
                            name='uniq_disks0server_name'),
    )

    id = sa.Column(sa.String(36), primary_key=True)
    server_id = sa.Column(sa.String(64), sa.ForeignKey('servers.id'),
                          nullable=False)
    name = sa.Column(sa.String(64), nullable=False)
    active_image = sa.Column(sa.String(1024), nullable=False)
    # The live layer, as the driver names it (see the module docstring).
    locator = sa.Column(sa.JSON, nullable=True)
    # The snapshot the live image sits on (its backing file), or None.
    snapshot_id = sa.Column(sa.String(36), nullable=True)
    # The operation holding this disk's lock, or None.
    operation_id = sa.Column(sa.String(36), nullable=True)
    # Made from a snapshot (``POST /v1/snapshots/{id}/clone``): which one,
    # and how (``flat``: a standalone copy; ``linked``: a layer on the
    # snapshot's, which is then one of the snapshot's children).
    clone_of = sa.Column(sa.String(36), nullable=True, index=True)
    clone_mode = sa.Column(sa.String(16), nullable=True)

    server = orm.relationship('Server', back_populates='disks')

    @orm.validates('locator')
    def _copy_path(self, key, locator):
        self.active_image = (locator or {}).get('path') or ''
        return locator


class Snapshot(Base):
    __tablename__ = 'snapshots'

    id = sa.Column(sa.String(36), primary_key=True)
    disk_id = sa.Column(sa.String(36), sa.ForeignKey('disks.id'),
                        nullable=False, index=True)
    project_id = sa.Column(sa.String(64), nullable=False, index=True)
    parent_id = sa.Column(sa.String(36), nullable=True, index=True)
    name = sa.Column(sa.String(255), nullable=False)
    status = sa.Column(sa.String(16), nullable=False)
    image = sa.Column(sa.String(1024), nullable=True)
    # Its layer, as the driver names it; None when it holds none (error).
    locator = sa.Column(sa.JSON, nullable=True)
    size_bytes = sa.Column(sa.BigInteger, nullable=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           onupdate=utcnow)
    # The snapshot policy that made it (its pruning touches only these),
    # or None for a tenant's own snapshot.
    policy_id = sa.Column(sa.String(36), nullable=True, index=True)
    # Pinned by its owner: it cannot be deleted, and no policy prunes it.
    protected = sa.Column(sa.Boolean, nullable=False, default=False,
                          server_default=sa.false())
    # quiesce: what the tenant asked (required/preferred/off, None: the
    # default), and what the snapshot got: ``application`` (the guest
    # agent froze the filesystems) or ``crash``, and why.
    quiesce = sa.Column(sa.String(16), nullable=True)
    consistency = sa.Column(sa.String(16), nullable=True)
    consistency_reason = sa.Column(sa.String(255), nullable=True)

    # The snapshot group it was taken in (several disks, one pause), or
    # None for a snapshot of one disk.
    group_id = sa.Column(sa.String(36), nullable=True, index=True)
    # When the guest was paused for it, on QEMU's clock (the driver's
    # ``taken_at``); ``created_at`` is when it was asked for.  None until
    # it is taken, and for an offline snapshot (no pause).
    taken_at = sa.Column(sa.DateTime, nullable=True)

    disk = orm.relationship('Disk')

    @orm.validates('locator')
    def _copy_path(self, key, locator):
        self.image = (locator or {}).get('path')
        return locator


class SnapshotGroup(Base):
    """Snapshots of several disks of one server taken in one pause, so the
    disks are consistent with one another (``conductor.groups``).
    """
    __tablename__ = 'snapshot_groups'

    id = sa.Column(sa.String(36), primary_key=True)
    project_id = sa.Column(sa.String(64), nullable=False, index=True)
    server_id = sa.Column(sa.String(64), sa.ForeignKey('servers.id'),
                          nullable=False, index=True)
    name = sa.Column(sa.String(255), nullable=False)
    # The create_group operation that made it.
    operation_id = sa.Column(sa.String(36), nullable=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class Operation(Base):
    __tablename__ = 'operations'

    id = sa.Column(sa.String(36), primary_key=True)
    project_id = sa.Column(sa.String(64), nullable=False, index=True)
    server_id = sa.Column(sa.String(64), nullable=False, index=True)
    disk_id = sa.Column(sa.String(36), nullable=False)
    snapshot_id = sa.Column(sa.String(36), nullable=True)
    host = sa.Column(sa.String(255), nullable=False)
    action = sa.Column(sa.String(16), nullable=False)
    status = sa.Column(sa.String(16), nullable=False)
    mode = sa.Column(sa.String(16), nullable=True)
    # The task as sent to the agent, so it can be sent again unchanged.
    task = sa.Column(sa.JSON, nullable=True)
    steps = sa.Column(sa.JSON, nullable=True)
    pause_ms = sa.Column(sa.Float, nullable=True)
    progress = sa.Column(sa.Float, nullable=True)
    error = sa.Column(sa.Text, nullable=True)
    conductor = sa.Column(sa.String(255), nullable=True)
    # The snapshot's status before the operation, restored if it fails.
    prior_status = sa.Column(sa.String(16), nullable=True)
    # Who asked: "tenant", "policy" for a snapshot policy's runs and
    # pruning, or "conductor" for deferred deletions it finishes by itself
    # (conductor.operations.REQUESTERS).
    requested_by = sa.Column(sa.String(16), nullable=False,
                             default='tenant')
    # When the agent's report is due; past it the conductor asks the agent.
    deadline = sa.Column(sa.DateTime, nullable=True)
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    # A clone's new disk: {"server_id", "disk", "mode"}.
    target = sa.Column(sa.JSON, nullable=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           onupdate=utcnow)


class IdempotencyKey(Base):
    """A write request's ``Idempotency-Key`` and its answer
    (``conductor.idempotency``): a repeat within ``[api]
    idempotency_window`` is answered from here, on any conductor.

    ``status`` is ``in_progress`` from the first request's claim until its
    answer is stored (``done``).  ``operation_ids`` are the operations the
    request recorded, written in the same transaction as each of them: a
    request whose conductor died before answering is answered from them.
    """
    __tablename__ = 'idempotency_keys'
    __table_args__ = (
        sa.UniqueConstraint('project_id', 'key',
                            name='uniq_idempotency_keys0project_key'),
    )

    id = sa.Column(sa.String(36), primary_key=True)
    project_id = sa.Column(sa.String(64), nullable=False)
    key = sa.Column(sa.String(255), nullable=False)
    method = sa.Column(sa.String(16), nullable=False)
    path = sa.Column(sa.String(1024), nullable=False)
    # SHA-256 of the request's body as parsed (canonical JSON).
    fingerprint = sa.Column(sa.String(64), nullable=False)
    status = sa.Column(sa.String(16), nullable=False)
    response_status = sa.Column(sa.Integer, nullable=True)
    response_body = sa.Column(sa.JSON, nullable=True)
    operation_ids = sa.Column(sa.JSON, nullable=True)
    conductor = sa.Column(sa.String(255), nullable=True)
    # When the key was first seen (its window starts), and when the
    # request now processing it claimed it.
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           index=True)
    claimed_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


class SnapshotPolicy(Base):
    """A schedule with retention for one server (all or some disks).

    ``next_run`` is the claim: the conductor that moves it forward with a
    compare-and-set UPDATE owns that slot (``conductor.schedule_runner``).
    """
    __tablename__ = 'snapshot_policies'

    id = sa.Column(sa.String(36), primary_key=True)
    project_id = sa.Column(sa.String(64), nullable=False, index=True)
    server_id = sa.Column(sa.String(64), sa.ForeignKey('servers.id'),
                          nullable=False, index=True)
    name = sa.Column(sa.String(255), nullable=False)
    # Disk names, or None for every disk of the server.
    disks = sa.Column(sa.JSON, nullable=True)
    # Exactly one of interval (seconds) and cron is set.
    interval = sa.Column(sa.Integer, nullable=True)
    cron = sa.Column(sa.String(255), nullable=True)
    timezone = sa.Column(sa.String(64), nullable=False, default='UTC')
    keep_last = sa.Column(sa.Integer, nullable=False, default=0)
    keep_hourly = sa.Column(sa.Integer, nullable=False, default=0)
    keep_daily = sa.Column(sa.Integer, nullable=False, default=0)
    keep_weekly = sa.Column(sa.Integer, nullable=False, default=0)
    keep_monthly = sa.Column(sa.Integer, nullable=False, default=0)
    keep_yearly = sa.Column(sa.Integer, nullable=False, default=0)
    enabled = sa.Column(sa.Boolean, nullable=False, default=True)
    # The slot of the last run claimed, and the next slot (None: disabled).
    last_run = sa.Column(sa.DateTime, nullable=True)
    next_run = sa.Column(sa.DateTime, nullable=True, index=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           onupdate=utcnow)


class PolicyRun(Base):
    """One scheduled slot of one policy on one disk: its outcome, the
    snapshot it made and the snapshots pruned after it.
    """
    __tablename__ = 'policy_runs'

    id = sa.Column(sa.String(36), primary_key=True)
    policy_id = sa.Column(sa.String(36),
                          sa.ForeignKey('snapshot_policies.id',
                                        ondelete='CASCADE'),
                          nullable=False, index=True)
    project_id = sa.Column(sa.String(64), nullable=False)
    # None if the policy names a disk the server does not have.
    disk_id = sa.Column(sa.String(36), nullable=True)
    disk_name = sa.Column(sa.String(64), nullable=False)
    # The slot's time (UTC).
    scheduled_for = sa.Column(sa.DateTime, nullable=False)
    # pending (claimed, to start or retry), created, failed, skipped.
    outcome = sa.Column(sa.String(16), nullable=False)
    # Why it was retried, skipped or failed: an error code and message.
    reason_code = sa.Column(sa.String(64), nullable=True)
    reason = sa.Column(sa.Text, nullable=True)
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    # When a pending run may be tried (again); a claim moves it forward.
    next_attempt = sa.Column(sa.DateTime, nullable=True)
    snapshot_id = sa.Column(sa.String(36), nullable=True)
    operation_id = sa.Column(sa.String(36), nullable=True)
    # none, pending (after the snapshot is available), done.
    prune_status = sa.Column(sa.String(16), nullable=False, default='none')
    prune_claimed_until = sa.Column(sa.DateTime, nullable=True)
    pruned_ids = sa.Column(sa.JSON, nullable=True)
    conductor = sa.Column(sa.String(255), nullable=True)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           index=True)
    updated_at = sa.Column(sa.DateTime, nullable=False, default=utcnow,
                           onupdate=utcnow)
