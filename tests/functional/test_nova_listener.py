"""nova's versioned notifications through the real RabbitMQ to a running
conductor (``[nova_notifications] enabled``) and a libvirt agent: nova's
own published samples (tests/functional/nova_samples/, their origin in
the README there), sent as nova sends them (an oslo.messaging Notifier,
topic ``versioned_notifications``, exchange ``nova``), duplicated and out
of order.  The data of the live layer is read with ``qemu-io``.
"""

import copy
import json
import os
import time
import uuid

from oslo_config import cfg
import oslo_messaging
import pytest

from agent import images
from livesnap import rpc
from livesnap_tools import fixtures
from tests.functional.test_libvirt_api import Domain
from tests.functional.test_libvirt_api import EXTRA
from tests.functional.test_libvirt_driver import assert_content
from tests.functional.test_libvirt_driver import write

pytestmark = pytest.mark.functional

pytest.importorskip('libvirt')

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       'nova_samples')
MiB = 1024 * 1024
ADMIN = 'admin-token'


def sample(name, inst_uuid, project='p1', host=fixtures.HOST):
    """nova's sample ``name`` about our instance."""
    with open(os.path.join(SAMPLES, name + '.json')) as f:
        msg = json.load(f)
    data = msg['payload'].setdefault('nova_object.data', {})
    data.update(uuid=inst_uuid, host=host, tenant_id=project)
    return msg


class Nova(object):
    """Sends notifications as nova does: messagingv2 on topic
    ``versioned_notifications`` of exchange ``nova``.
    """

    def __init__(self, url):
        self.conf = cfg.ConfigOpts()
        self.conf([], project='nova-test')
        # The transport registers its options (control_exchange among
        # them) on its first use; the exchange is read when it is made.
        oslo_messaging.get_notification_transport(self.conf, url=url)
        self.conf.set_override('control_exchange', 'nova')
        self.transport = oslo_messaging.get_notification_transport(
            self.conf, url=url)

    def send(self, msg):
        notifier = oslo_messaging.Notifier(
            self.transport, publisher_id=msg['publisher_id'],
            driver='messagingv2', topics=['versioned_notifications'])
        getattr(notifier, msg['priority'].lower())(
            {}, msg['event_type'], copy.deepcopy(msg['payload']))

    def cleanup(self):
        self.transport.cleanup()


@pytest.fixture
def dep(libvirt_up, tmp_path, rabbit_url, postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    d = fixtures.ProcessDeployment(
        tmp_path, rabbit_url, postgres_url,
        extra=EXTRA + '[nova_notifications]\nenabled = true\n')
    nova = None
    try:
        d.start()
        nova = Nova(rabbit_url)
        d.nova = nova
        yield d
    except BaseException:
        for name in d.procs:
            print('--- %s log ---\n%s' % (name, d.log(name)))
        raise
    finally:
        if nova is not None:
            nova.cleanup()
        d.stop()
        rpc.cleanup()


@pytest.fixture
def domain(dep):
    d = Domain(dep.image_dir)
    yield d
    d.cleanup()


def wait_log(dep, text, count=1, timeout=60):
    deadline = time.monotonic() + timeout
    while dep.log('conductor').count(text) < count:
        assert time.monotonic() < deadline, (
            'conductor never logged %r %d times:\n%s'
            % (text, count, dep.log('conductor')[-3000:]))
        time.sleep(0.1)


def wait_status(dep, path, status, token='p1-token', timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        code, body = dep.api('GET', path, token=token)
        if code == status:
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.2)


def _create(dep, server_id, name):
    out = dep.ok('POST', '/v1/servers/%s/snapshots' % server_id,
                 {'snapshot': {'name': name, 'disk': 'vda'}}, status=202)
    op = dep.wait_operation(out['operation']['id'], timeout=180)
    assert op['status'] == 'succeeded', op
    return out['snapshot']['id']


def test_nova_lifecycle(dep, domain):
    nova = dep.nova
    u = domain.uuid
    # Delete before create (a stray instance), then its late create: the
    # conductor ignores both and registers nothing.
    ghost = str(uuid.uuid4())
    nova.send(sample('instance-delete-end', ghost))
    wait_log(dep, 'instance %s deleted; it is not registered' % ghost)
    nova.send(sample('instance-create-end', ghost))
    wait_log(dep, 'instance %s was created after its deletion' % ghost)
    assert fixtures.api_error(dep, 'GET', '/v1/servers/%s' % ghost,
                              token=ADMIN) == (404, 'not_found')

    # Created, twice: registered once, visible to its project's members.
    create = sample('instance-create-end', u)
    nova.send(create)
    nova.send(create)
    server = wait_status(dep, '/v1/servers/%s' % u, 200)['server']
    assert [d['name'] for d in server['disks']] == ['vda']
    assert server['project_id'] == 'p1'
    assert server['status'] == 'active'
    wait_log(dep, 'instance %s is already registered' % u)

    # Logged only.
    for name in ('instance-power_off-end', 'instance-power_on-end',
                 'instance-volume_attach-end'):
        nova.send(sample(name, u))
    wait_log(dep, 'the instance was powered off (instance %s' % u)
    wait_log(dep, 'the instance was powered on (instance %s' % u)
    wait_log(dep, 'a volume was attached (instance %s' % u)
    with open(os.path.join(SAMPLES,
                           'instance-live_migration_post-end.json')) as f:
        nova.send(json.load(f))

    # Two snapshots with data after each, then nova deletes it, twice.
    _create(dep, u, 'a')
    write(domain.chain()[0], 0xb1, 1 * MiB, MiB)
    _create(dep, u, 'b')
    write(domain.chain()[0], 0xb2, 2 * MiB, MiB)
    delete = sample('instance-delete-end', u)
    nova.send(delete)
    nova.send(delete)
    wait_status(dep, '/v1/servers/%s' % u, 404, token=ADMIN, timeout=240)
    ops = [x for x in dep.ok('GET', '/v1/operations',
                             token=ADMIN)['operations']
           if x['action'] == 'server.delete']
    assert len(ops) == 1 and ops[0]['status'] == 'succeeded', ops
    # The live layer is complete and self-contained; the registered file
    # and every snapshot layer the merges left are gone or it.
    live = domain.chain()
    assert len(live) == 1, live
    assert images.backing_file(live[0]) is None
    images.check(live[0])
    assert_content(live[0], [(0xa1, 0, MiB), (0xb1, 1 * MiB, MiB),
                             (0xb2, 2 * MiB, MiB)])
    # A late create of the deleted instance registers nothing.
    nova.send(create)
    wait_log(dep, 'instance %s was created after its deletion' % u)
    assert fixtures.api_error(dep, 'GET', '/v1/servers/%s' % u,
                              token=ADMIN) == (404, 'not_found')


def _unregister(dep, server_id, query=''):
    status, body = dep.api('DELETE', '/v1/servers/%s%s' % (server_id, query),
                           token=ADMIN)
    return status, body


def test_unregister_running_domain(dep, domain):
    """``DELETE /v1/servers/{id}`` of a running libvirt domain: both
    snapshots are merged away online, the domain keeps running on a live
    layer that is complete and self-contained.
    """
    u = domain.uuid
    dep.ok('POST', '/v1/servers', {'server': {
        'id': u, 'name': 'n', 'project_id': 'p1', 'host': fixtures.HOST,
        'driver': 'libvirt', 'domain': u}}, token=ADMIN, status=201)
    _create(dep, u, 'a')
    write(domain.chain()[0], 0xb1, 1 * MiB, MiB)
    domain.start()
    _create(dep, u, 'b')
    status, body = _unregister(dep, u)
    assert status == 202, body
    op = dep.wait_operation(body['operation']['id'], token=ADMIN,
                            timeout=240)
    assert op['status'] == 'succeeded', op
    assert fixtures.api_error(dep, 'GET', '/v1/servers/%s' % u,
                              token=ADMIN) == (404, 'not_found')
    assert domain.state() == 1   # VIR_DOMAIN_RUNNING
    domain.stop()
    live = domain.chain()
    assert len(live) == 1, live
    assert images.backing_file(live[0]) is None
    assert_content(live[0], [(0xa1, 0, MiB), (0xb1, 1 * MiB, MiB)])


def test_unregister_keep_snapshots_lists_layers(dep, domain):
    u = domain.uuid
    dep.ok('POST', '/v1/servers', {'server': {
        'id': u, 'name': 'n', 'project_id': 'p1', 'host': fixtures.HOST,
        'driver': 'libvirt', 'domain': u}}, token=ADMIN, status=201)
    _create(dep, u, 'a')
    live = domain.chain()[0]
    status, body = _unregister(dep, u, '?keep_snapshots=true')
    assert status == 200, body
    # The layer listed is the live layer's backing file, left in place
    # (whichever layout names it).
    files = [f['path'] for f in body['server']['files_left']]
    backing = images.backing_file(live)
    assert backing
    assert [os.path.join(os.path.dirname(live), backing)] == [
        os.path.join(os.path.dirname(live), f) for f in files], (
        files, backing)
    assert os.path.exists(files[0]) and os.path.exists(live)
    assert domain.chain()[0] == live
