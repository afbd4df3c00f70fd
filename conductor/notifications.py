"""Versioned notifications of operations, through oslo.messaging.

Every operation emits ``livesnap.<object>.<action>.start`` when it starts
running (it holds its disk's lock and its task goes to the agent) and
``.end`` or ``.error`` when it ends: ``snapshot.create``,
``snapshot.delete``, ``disk.revert``, ``snapshot_group.create`` (several
disks in one pause: ``group_id`` and every member in ``disks``),
``snapshot.clone`` (the new disk in ``target``) and ``server.delete`` (a
server unregistered with its snapshots, ``conductor.unregister``).
``requested_by`` says who asked: a tenant, a snapshot policy (its runs
and its pruning) or the conductor (its own deferred work).  An operation
decided and finished in one go by the conductor (a logical delete) emits
``.start`` and ``.end`` together; a waiting operation refused when it
could start emits only ``.error``.

The payload is versioned like nova's::

    {"livesnap_object.name": "OperationPayload",
     "livesnap_object.namespace": "livesnap",
     "livesnap_object.version": "1.1",
     "livesnap_object.data": {...}}

A field added is a minor version, one removed or changed a major one
(1.1 added ``group_id``, ``disks`` and ``target``).

``operations.set_status`` (and ``operations.record``) call :func:`queue` in
the transaction that changes the status; the notification is built from
the session's objects just before it commits and sent only after it
committed, so a rolled back change is never announced, and nothing is
sent twice (a duplicate report changes nothing).  The same point feeds the
conductor's Prometheus counters (``conductor.metrics``).

Notifications are sent with oslo.messaging's ``Notifier`` on the
notification transport (``[oslo_messaging_notifications]``: ``driver =
messagingv2`` to send them, ``topics`` default ``versioned_notifications``,
``transport_url`` default the RPC bus).
"""

import logging
import threading

from oslo_config import cfg
from oslo_context import context as oslo_context
import sqlalchemy as sa
from sqlalchemy import orm

from conductor.db import models
from conductor import metrics
from conductor import states
from livesnap import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

PAYLOAD_NAME = 'OperationPayload'
PAYLOAD_VERSION = '1.1'
NAMESPACE = 'livesnap'

#: operation action -> the object and verb in the event type
EVENT_PREFIXES = {
    'create': 'livesnap.snapshot.create',
    'delete': 'livesnap.snapshot.delete',
    'revert': 'livesnap.disk.revert',
    'create_group': 'livesnap.snapshot_group.create',
    'clone': 'livesnap.snapshot.clone',
    'server.delete': 'livesnap.server.delete',
}

_KEY = 'livesnap_notifications'
_notifier = None
_lock = threading.Lock()


def get_notifier():
    """This process's Notifier (made on first use)."""
    global _notifier
    with _lock:
        if _notifier is None:
            transport = rpc.messaging.get_notification_transport(CONF)
            _notifier = rpc.messaging.Notifier(
                transport, publisher_id='livesnap-conductor.%s'
                % CONF.conductor.host)
        return _notifier


def reset():
    """Forget the Notifier (tests change the transport)."""
    global _notifier
    with _lock:
        _notifier = None


def queue(op, created=False):
    """Announce ``op``'s status once the current transaction commits.

    :param created: the operation was made in this transaction.
    """
    session = orm.object_session(op)
    if session is None:
        return
    pending = session.info.setdefault(_KEY, {})
    entry = pending.setdefault(op.id, {'op': op, 'created': created,
                                       'snapshot_size': None,
                                       'group_id': None})
    # Read now: a merge's report deletes the snapshot before it commits.
    if op.snapshot_id is not None:
        snap = session.get(models.Snapshot, op.snapshot_id)
        if snap is not None and snap.size_bytes is not None:
            entry['snapshot_size'] = snap.size_bytes
        if snap is not None and snap.group_id is not None:
            entry['group_id'] = snap.group_id


def events(status, created):
    """The event suffixes an operation now ``status`` emits."""
    if status == states.RUNNING:
        return ['start']
    end = {states.SUCCEEDED: 'end', states.FAILED: 'error'}.get(status)
    if end is None:
        return []
    return ['start', end] if created else [end]


def _agent_pause_ms(steps):
    values = [(s.get('detail') or {}).get('agent_pause_ms')
              for s in steps or [] if isinstance(s, dict)]
    values = [v for v in values if isinstance(v, (int, float))]
    return round(sum(values), 3) if values else None


def member(disk_id, disk_name, snapshot_id, snapshot_size):
    """One entry of a payload's ``disks``."""
    return {'disk_id': disk_id, 'disk': disk_name,
            'snapshot_id': snapshot_id, 'snapshot_size_bytes': snapshot_size}


def _target(op):
    """A clone's new disk, or None."""
    if op.action != 'clone' or not op.target:
        return None
    return {key: op.target.get(key)
            for key in ('server_id', 'disk_id', 'disk', 'mode')}


def payload(op, disk_name=None, snapshot_size=None, group_id=None,
            members=None):
    """The versioned payload of an operation as it stands.

    :param group_id: the snapshot group of the operation's snapshot.
    :param members: a group create's disks (:func:`member`, in the order
        of the disks' ids); None: the operation's own disk.
    """
    steps = [{'name': s.get('name'), 'status': s.get('status'),
              'duration_ms': s.get('duration_ms')}
             for s in op.steps or [] if isinstance(s, dict)]
    if members is None:
        members = [member(op.disk_id, disk_name, op.snapshot_id,
                          snapshot_size)]
    return {
        'livesnap_object.name': PAYLOAD_NAME,
        'livesnap_object.namespace': NAMESPACE,
        'livesnap_object.version': PAYLOAD_VERSION,
        'livesnap_object.data': {
            'operation_id': op.id,
            'action': op.action,
            'requested_by': op.requested_by or 'tenant',
            'project_id': op.project_id,
            'server_id': op.server_id,
            'disk_id': op.disk_id,
            'disk': disk_name,
            'snapshot_id': op.snapshot_id,
            'snapshot_size_bytes': snapshot_size,
            'group_id': group_id,
            'disks': members,
            'target': _target(op),
            'host': op.host,
            'mode': op.mode,
            'status': op.status,
            'pause_ms': op.pause_ms,
            'agent_pause_ms': _agent_pause_ms(op.steps),
            'steps': steps,
            'error': op.error,
            'created_at': op.created_at.isoformat()
            if op.created_at is not None else None,
        },
    }


def _build(session):
    """Just before commit: the payloads of what this transaction did."""
    pending = session.info.pop(_KEY, None)
    if not pending:
        return
    ready = []
    for entry in pending.values():
        op = entry['op']
        suffixes = events(op.status, entry['created'])
        if not suffixes:
            continue
        disk = session.get(models.Disk, op.disk_id)
        members = _group_members(session, entry['group_id']) \
            if op.action == 'create_group' else None
        data = payload(op, disk.name if disk is not None else None,
                       entry['snapshot_size'], entry['group_id'], members)
        ready.extend((EVENT_PREFIXES[op.action] + '.' + s, data)
                     for s in suffixes)
    if ready:
        session.info[_KEY + '.ready'] = ready


def _group_members(session, group_id):
    """Every disk of a group with its snapshot, in the disks' order."""
    if group_id is None:
        return None
    rows = session.execute(
        sa.select(models.Snapshot.disk_id, models.Disk.name,
                  models.Snapshot.id, models.Snapshot.size_bytes)
        .join(models.Disk, models.Disk.id == models.Snapshot.disk_id)
        .where(models.Snapshot.group_id == group_id)
        .order_by(models.Snapshot.disk_id)).all()
    return [member(*row) for row in rows]


def _send(session):
    """After commit: send, and count them for the metrics."""
    ready = session.info.pop(_KEY + '.ready', None)
    for event_type, data in ready or ():
        if not event_type.endswith('.start'):
            try:
                metrics.operation_ended(data['livesnap_object.data'])
            except Exception:
                LOG.exception('Counting operation %(op)s failed',
                              {'op': data['livesnap_object.data']
                               ['operation_id']})
        emit(event_type, data)


def emit(event_type, data):
    """Send one notification; a failure is logged, never raised (the
    operation it describes is already committed).
    """
    try:
        notifier = get_notifier()
        if not notifier.is_enabled():
            return
        current = oslo_context.get_current()
        ctxt = current.to_dict() if current is not None else {}
        if event_type.endswith('.error'):
            notifier.error(ctxt, event_type, data)
        else:
            notifier.info(ctxt, event_type, data)
    except Exception:
        LOG.exception('Could not send notification %(event)s',
                      {'event': event_type})


def _discard(session):
    session.info.pop(_KEY, None)
    session.info.pop(_KEY + '.ready', None)


sa.event.listen(orm.Session, 'before_commit', _build)
sa.event.listen(orm.Session, 'after_commit', _send)
sa.event.listen(orm.Session, 'after_soft_rollback',
                lambda session, previous: _discard(session))
