"""What an operator wires to livesnap, checked for real: versioned
notifications consumed from RabbitMQ, the Prometheus endpoints of the
conductor and the agent scraped, ``/healthcheck`` and the request ids
(down to the agent's log lines).

Conductor and agent run as processes over the real RabbitMQ (a vhost of
the test's own) with a real QEMU VM.
"""

import json
import re
import threading
import time
import urllib.request
import uuid
import warnings

from oslo_config import cfg
import pytest

from conductor import notification_samples
from livesnap_tools import fixtures
from tests.functional import scenarios

with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    import oslo_messaging as messaging

pytestmark = pytest.mark.functional

CONF = cfg.CONF


class Collector(object):
    """A notification endpoint that keeps what it receives."""

    def __init__(self):
        self.received = []
        self.changed = threading.Condition()

    def _keep(self, priority, event_type, payload, metadata):
        with self.changed:
            self.received.append((priority, event_type, payload))
            self.changed.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep('info', event_type, payload, metadata)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep('error', event_type, payload, metadata)

    def wait_for(self, wanted, timeout=60):
        """Block until every (event type, operation id) in ``wanted`` came;
        returns {(event type, operation id): payload}.
        """
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                got = {(e, p['livesnap_object.data']['operation_id']): p
                       for _, e, p in self.received}
                if all(w in got for w in wanted):
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError('missing %s; got %s' % (
                        sorted(set(wanted) - set(got)), sorted(got)))
                self.changed.wait(left)


def _scrape(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port,
                                timeout=30) as resp:
        return resp.read().decode()


def _value(text, name, **labels):
    """The sample ``name{labels}`` of a scrape (labels in any order)."""
    for line in text.splitlines():
        if line.startswith('#') or not line.startswith(name):
            continue
        match = re.match(r'([a-zA-Z_:]+)(\{(.*)\})? (\S+)$', line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ''))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def _http(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_notifications_metrics_health_over_rabbitmq(tmp_path, rabbit_url):
    conductor_port = fixtures.free_port()
    agent_port = fixtures.free_port()
    db_url = 'sqlite:///%s' % (tmp_path / 'livesnap.sqlite')
    dep = fixtures.ProcessDeployment(
        tmp_path, rabbit_url, db_url, extra=(
            '[oslo_messaging_notifications]\ndriver = messagingv2\n'
            '[metrics]\nconductor_port = %d\nagent_port = %d\n'
            % (conductor_port, agent_port)))

    collector = Collector()
    transport = messaging.get_notification_transport(CONF, url=rabbit_url)
    listener = messaging.get_notification_listener(
        transport, [messaging.Target(topic='versioned_notifications',
                                     exchange=dep.control_exchange)],
        [collector], executor='threading')
    listener.start()
    try:
        with fixtures.running(dep):
            _check(dep, collector, conductor_port, agent_port, tmp_path)
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def _check(dep, collector, conductor_port, agent_port, tmp_path):
    # The healthcheck: database and bus, no token needed.
    status, headers, body = _http(dep.base_url + '/healthcheck')
    assert status == 200, body
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers['x-openstack-request-id'].startswith('req-')

    vm, base = scenarios.start_vm(dep, tmp_path)
    try:
        # A create carrying a caller's global request id.
        global_id = 'req-' + str(uuid.uuid4())
        req = urllib.request.Request(
            dep.base_url + '/v1/servers/srv1/snapshots',
            data=json.dumps({'snapshot': {'name': 's1',
                                          'disk': 'vda'}}).encode(),
            method='POST', headers={'X-Auth-Token': 'p1-token',
                                    'Content-Type': 'application/json',
                                    'X-OpenStack-Request-ID': global_id})
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
            request_id = resp.headers['x-openstack-request-id']
            assert re.match(r'req-[0-9a-f-]{36}$', request_id)
            assert request_id != global_id
            created = json.loads(resp.read())
        create_id = created['operation']['id']
        snap_id = created['snapshot']['id']
        op = dep.wait_operation(create_id)
        assert op['status'] == 'succeeded', op

        # The snapshot's only child is the live image: a merge delete.
        deleted = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                         status=202)
        delete_id = deleted['operation']['id']
        op = dep.wait_operation(delete_id)
        assert op['status'] == 'succeeded', op
        assert op['mode'] == 'merge'
        assert vm.status() == 'running'
    finally:
        vm.kill()

    got = collector.wait_for([
        ('livesnap.snapshot.create.start', create_id),
        ('livesnap.snapshot.create.end', create_id),
        ('livesnap.snapshot.delete.start', delete_id),
        ('livesnap.snapshot.delete.end', delete_id)])
    sample_keys = set(notification_samples.notifications.payload(
        notification_samples.SAMPLES[0][2])['livesnap_object.data'])
    for (event_type, op_id), payload in got.items():
        assert payload['livesnap_object.name'] == 'OperationPayload'
        assert payload['livesnap_object.version'] == \
            notification_samples.notifications.PAYLOAD_VERSION
        data = payload['livesnap_object.data']
        assert set(data) == sample_keys, event_type
        assert data['project_id'] == 'p1' and data['server_id'] == 'srv1'
        assert data['disk'] == 'vda' and data['host'] == fixtures.HOST
    end = got[('livesnap.snapshot.create.end', create_id)][
        'livesnap_object.data']
    assert end['status'] == 'succeeded' and end['mode'] == 'online'
    assert end['snapshot_id'] == snap_id
    assert end['pause_ms'] is not None and end['agent_pause_ms'] is not None
    assert [s['name'] for s in end['steps']] == [
        'prepare', 'pause', 'pivot', 'resume']
    start = got[('livesnap.snapshot.create.start', create_id)][
        'livesnap_object.data']
    assert start['status'] == 'running' and start['steps'] == []
    end = got[('livesnap.snapshot.delete.end', delete_id)][
        'livesnap_object.data']
    assert end['mode'] == 'merge' and end['status'] == 'succeeded'
    assert end['requested_by'] == 'tenant'
    assert end['snapshot_size_bytes'] > 0
    # Each sent once.
    events = [(e, p['livesnap_object.data']['operation_id'])
              for _, e, p in collector.received]
    assert len(events) == len(set(events)), events

    # The conductor's metrics.
    text = _scrape(conductor_port)
    assert _value(text, 'livesnap_operations_total', action='create',
                  mode='online', status='succeeded',
                  requested_by='tenant') == 1.0
    assert _value(text, 'livesnap_operations_total', action='delete',
                  mode='merge', status='succeeded') == 1.0
    assert _value(text, 'livesnap_pause_seconds_count', action='create',
                  mode='online') == 1.0
    assert _value(text, 'livesnap_merge_bytes_total') > 0
    assert _value(text, 'livesnap_merge_seconds_count',
                  status='succeeded') == 1.0
    assert _value(text, 'livesnap_hosts', state='up') == 1.0
    assert _value(text, 'livesnap_deferred_deletions') == 0.0
    assert _value(text, 'livesnap_database_up') == 1.0
    assert _value(text, 'livesnap_snapshots', project_id='p1') is None
    assert _value(text, 'livesnap_chain_depth_max', project_id='p1') == 0.0

    # The agent's.
    text = _scrape(agent_port)
    host = fixtures.HOST
    assert _value(text, 'livesnap_agent_operations_total', host=host,
                  action='create_snapshot', status='succeeded') == 1.0
    assert _value(text, 'livesnap_agent_operations_total', host=host,
                  action='delete_snapshot', mode='merge',
                  status='succeeded') == 1.0
    assert _value(text, 'livesnap_agent_pause_seconds_count', host=host,
                  action='create_snapshot') == 1.0
    assert _value(text, 'livesnap_agent_merge_seconds_count', host=host,
                  status='succeeded') == 1.0
    assert _value(text, 'livesnap_agent_journal_entries', host=host,
                  state='unfinished') == 0.0

    # The request ids reached the agent's log lines of that operation.
    log = (tmp_path / 'agent.log').read_text()
    lines = [line for line in log.splitlines()
             if 'create_snapshot operation %s' % create_id in line or
             'Operation %s succeeded' % create_id in line]
    assert len(lines) == 2, log[-3000:]
    assert all('[%s %s]' % (request_id, global_id) in line
               for line in lines), lines
