"""Listening to nova's versioned notifications (issue 20, item 5).

With ``[nova_notifications] enabled = true``, livesnap-conductor listens on
nova's bus (``transport_url``, ``topics``, exchange ``nova``) as a
notification listener of the pool ``[nova_notifications] pool``: the
conductors of one pool share one queue, so each event is handled by one
of them, and other consumers of nova's notifications keep theirs.

* ``instance.create.end``: the instance is registered as a server through
  the registration by libvirt domain (``conductor.servers.register_domain``,
  as ``POST /v1/servers`` with ``driver: libvirt``): id and domain the
  instance's ``uuid`` (nova's libvirt driver gives the domain the
  instance's UUID), project its ``tenant_id``, host its ``host`` (through
  ``host_mapping``); its disks come from the domain as the agent sees it.
  Its project's members see it at once (no admin step).
* ``instance.delete.end``: the server is unregistered
  (``conductor.dispatch.delete_server``): its snapshots deleted, or kept
  and listed with ``keep_snapshots``; a protected snapshot keeps them all
  (records only); an operation running on a disk is waited for
  (``retry_seconds``); a host that is down: records only.
* ``instance.power_off.end`` / ``instance.power_on.end``: the server model
  has no power state yet: logged.
* ``instance.volume_attach.end`` / ``volume_detach.end`` /
  ``live_migration_post.end``: logged (issue 20 items 3 and 4).

Every handler is idempotent, and events may come twice or out of order:
a second create finds the server registered; a delete of an unknown
server is logged; a create after the delete of the same instance (a
late duplicate) is ignored, by the domain being gone and by a bounded
memory of the instances deleted.  An event is always acknowledged (a
failure is logged), so a poison event cannot block the queue.
"""

import collections
import logging
import threading
import time

from oslo_config import cfg

from conductor.db import api as db
from conductor import dispatch
from conductor import exception
from conductor import servers
from conductor import unregister
from livesnap import context
from livesnap import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: how many deleted instances are remembered (late creates are ignored)
TOMBSTONES = 4096
#: seconds between the tries of an unregister that finds a disk busy
RETRY_INTERVAL = 2.0

LOGGED_ONLY = {
    'instance.volume_attach.end': 'a volume was attached',
    'instance.volume_detach.end': 'a volume was detached',
    'instance.live_migration_post.end': 'the instance was live-migrated',
    'instance.power_off.end': 'the instance was powered off',
    'instance.power_on.end': 'the instance was powered on',
}


def instance(payload):
    """What the listener needs of a versioned instance payload.

    :returns: ``{'uuid', 'host', 'project_id', 'name', 'power_state',
        'state'}``, or None if the payload names no instance.
    """
    data = (payload or {}).get('nova_object.data') or {}
    uuid = data.get('uuid')
    if not uuid:
        return None
    return {'uuid': str(uuid).lower(), 'host': data.get('host'),
            'project_id': data.get('tenant_id') or data.get('project_id'),
            'name': data.get('display_name') or str(uuid),
            'power_state': data.get('power_state'),
            'state': data.get('state')}


def server_spec(inst, conf=None):
    """The registration (``schemas.server_create``'s ``server``) of an
    instance (:func:`instance`) by its libvirt domain.
    """
    conf = conf or CONF
    group = conf.nova_notifications
    host = (group.host_mapping or {}).get(inst['host'], inst['host'])
    return {'id': inst['uuid'], 'name': inst['name'][:255],
            'project_id': inst['project_id'], 'host': host,
            'driver': 'libvirt', 'domain': inst['uuid']}


class NovaEndpoint(object):
    """The notification endpoint: one method per priority used by nova's
    instance events (``info``; errors come as ``error``, ignored).
    """

    filter_rule = rpc.messaging.NotificationFilter(
        event_type=r'^instance\.')

    def __init__(self, conf=None, sleep=time.sleep):
        self.conf = conf or CONF
        self.sleep = sleep
        self._deleted = collections.OrderedDict()
        self._lock = threading.Lock()
        self._register_lock = threading.Lock()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        try:
            self.handle(event_type, payload)
        except Exception:
            LOG.exception('nova notification %(event)s (%(id)s) could not '
                          'be handled', {'event': event_type,
                                         'id': (metadata or {}).get(
                                             'message_id')})
        return None

    def handle(self, event_type, payload):
        """Act on one event.  :returns: what was done, for the tests and
        the log: a short word.
        """
        inst = instance(payload)
        if inst is None:
            if event_type in LOGGED_ONLY or event_type in (
                    'instance.create.end', 'instance.delete.end'):
                LOG.warning('nova %(event)s without an instance uuid '
                            'ignored', {'event': event_type})
            return 'ignored'
        if event_type == 'instance.create.end':
            return self.created(inst)
        if event_type == 'instance.delete.end':
            return self.deleted(inst)
        if event_type in LOGGED_ONLY:
            # TODO(issue 20 items 3, 4): follow disks and migrations; a
            # power state needs a column of the servers (none yet).
            LOG.info('nova: %(what)s (instance %(uuid)s, host %(host)s, '
                     'power state %(power)s); livesnap records nothing of '
                     'it yet', {'what': LOGGED_ONLY[event_type],
                                'uuid': inst['uuid'], 'host': inst['host'],
                                'power': inst['power_state']})
            return 'logged'
        return 'ignored'

    def _was_deleted(self, uuid):
        with self._lock:
            return uuid in self._deleted

    def _remember_deleted(self, uuid):
        with self._lock:
            self._deleted[uuid] = time.time()
            self._deleted.move_to_end(uuid)
            while len(self._deleted) > TOMBSTONES:
                self._deleted.popitem(last=False)

    def created(self, inst):
        uuid = inst['uuid']
        if self._was_deleted(uuid):
            LOG.info('nova: instance %(uuid)s was created after its '
                     'deletion was handled (a late event): not registered',
                     {'uuid': uuid})
            return 'late'
        if not inst['host'] or not inst['project_id']:
            LOG.warning('nova: instance %(uuid)s has no host or project: '
                        'not registered', {'uuid': uuid})
            return 'ignored'
        spec = server_spec(inst, self.conf)
        try:
            # One registration at a time in this process: a duplicate
            # then finds the server (another conductor's duplicate fails
            # on the primary key, below).
            with self._register_lock:
                server = servers.register_domain(context.make(), spec)
        except exception.Conflict as exc:
            if _registered(uuid):
                LOG.info('nova: instance %(uuid)s is already registered',
                         {'uuid': uuid})
                return 'exists'
            LOG.warning('nova: instance %(uuid)s not registered: %(error)s',
                        {'uuid': uuid, 'error': exc})
            return 'refused'
        except (exception.BadRequest, exception.NotFound,
                exception.HostDown) as exc:
            LOG.warning('nova: instance %(uuid)s not registered: %(error)s',
                        {'uuid': uuid, 'error': exc})
            return 'refused'
        except Exception:
            if _registered(uuid):
                LOG.info('nova: instance %(uuid)s is already registered',
                         {'uuid': uuid})
                return 'exists'
            raise
        LOG.info('nova: registered instance %(uuid)s (project %(project)s) '
                 'on host %(host)s with disks %(disks)s',
                 {'uuid': uuid, 'project': server.project_id,
                  'host': server.host,
                  'disks': ', '.join(d.name for d in server.disks)})
        return 'registered'

    def deleted(self, inst):
        uuid = inst['uuid']
        self._remember_deleted(uuid)
        keep = self.conf.nova_notifications.keep_snapshots
        deadline = time.monotonic() + \
            self.conf.nova_notifications.retry_seconds
        while True:
            try:
                op_id, files = dispatch.delete_server(
                    context.make(), uuid, keep_snapshots=keep)
                break
            except exception.NotFound:
                LOG.info('nova: instance %(uuid)s deleted; it is not '
                         'registered (never was, or already gone)',
                         {'uuid': uuid})
                return 'unknown'
            except unregister.SnapshotsPinned as exc:
                LOG.warning('nova: instance %(uuid)s deleted: %(error)s; '
                            'its snapshot layers are kept',
                            {'uuid': uuid, 'error': exc})
                keep = True
            except exception.HostDown:
                LOG.warning('nova: instance %(uuid)s deleted while its '
                            'host is down: its records only are removed',
                            {'uuid': uuid})
                op_id, files = dispatch.delete_server(
                    context.make(), uuid, keep_snapshots=True, force=True)
                break
            except unregister.DisksBusy as exc:
                if time.monotonic() >= deadline:
                    LOG.error('nova: instance %(uuid)s deleted, but it '
                              'could not be unregistered: %(error)s',
                              {'uuid': uuid, 'error': exc})
                    return 'busy'
                self.sleep(RETRY_INTERVAL)
        if op_id is not None:
            LOG.info('nova: instance %(uuid)s deleted: unregistering it, '
                     'operation %(op)s', {'uuid': uuid, 'op': op_id})
            return 'deleting'
        LOG.info('nova: instance %(uuid)s deleted: unregistered; files '
                 'left: %(files)s', {'uuid': uuid, 'files': ', '.join(
                     str(f.get('path') or f.get('locator'))
                     for f in files) or 'none'})
        return 'unregistered'


def _registered(server_id):
    try:
        db.server_owner(server_id)
        return True
    except exception.NotFound:
        return False


class NovaListener(object):
    """The notification listener a conductor runs when
    ``[nova_notifications] enabled``.
    """

    def __init__(self, conf=None):
        self.conf = conf or CONF
        self.listener = None
        self.endpoint = NovaEndpoint(self.conf)

    def start(self):
        group = self.conf.nova_notifications
        transport = rpc.messaging.get_notification_transport(
            self.conf, url=group.transport_url)
        targets = [rpc.messaging.Target(topic=topic, exchange=group.exchange)
                   for topic in group.topics]
        self.listener = rpc.messaging.get_notification_listener(
            transport, targets, [self.endpoint], executor='threading',
            pool=group.pool)
        self.listener.start()
        LOG.info('Listening to nova\'s notifications on %(topics)s '
                 '(exchange %(exchange)s, pool %(pool)s)',
                 {'topics': ', '.join(group.topics),
                  'exchange': group.exchange, 'pool': group.pool})

    def stop(self):
        if self.listener is not None:
            self.listener.stop()
            self.listener.wait()
            self.listener = None
