"""Notifications, metrics, healthcheck and request ids, without VMs."""

import logging
import os

import prometheus_client
import pytest
import webob

from conductor.api import app as api_app
from conductor.api import loader
from conductor.api import middleware
from conductor.db import api as db
from conductor.db import models
from conductor import dispatch
from conductor import metrics
from conductor import notification_samples
from conductor import notifications
from conductor import operations
from livesnap import context
from livesnap import rpc
from tests.unit import generated


@pytest.fixture
def sqlite(conf, tmp_path):
    conf.set('connection', 'sqlite:///%s' % (tmp_path / 'l.sqlite'),
             group='database')
    db.reset()
    db.sync()
    yield
    db.reset()


@pytest.fixture
def sent(monkeypatch):
    sent = []
    monkeypatch.setattr(notifications, 'emit',
                        lambda event, data: sent.append((event, data)))
    return sent


_DISK = {'driver': 'qemu', 'qmp_socket': None, 'path': '/i/b.qcow2'}


def _running_op(op_id):
    with db.transaction() as s:
        s.add(models.Host(name='h1', last_heartbeat=models.utcnow()))
        s.add(models.Server(id='srv1', name='s', project_id='p1',
                            host='h1'))
        s.add(models.Disk(id='d1', server_id='srv1', name='vda',
                          locator=_DISK, operation_id=op_id))
        s.add(models.Snapshot(id='snap1', disk_id='d1', project_id='p1',
                              name='n', status='creating',
                              locator={'driver': 'qemu',
                                       'path': '/i/a.qcow2'}))
        s.add(models.Operation(
            id=op_id, project_id='p1', server_id='srv1', disk_id='d1',
            snapshot_id='snap1', host='h1', action='create',
            status='running', mode='online', steps=[], attempts=0,
            requested_by='tenant', task={
                'operation_id': op_id, 'disk': _DISK,
                'layer_name': 'd1-%s' % op_id}))


def test_notification_docs_are_current():
    with open(os.path.join(generated.TOP, 'docs', 'notifications.md')) as f:
        assert f.read() == notification_samples.render(), (
            'docs/notifications.md is stale: run tools/gen-notification-docs')


def test_events_by_status():
    assert notifications.events('pending', True) == []
    assert notifications.events('running', True) == ['start']
    assert notifications.events('running', False) == ['start']
    assert notifications.events('succeeded', False) == ['end']
    assert notifications.events('failed', False) == ['error']
    # Decided and ended in one transaction (a logical delete).
    assert notifications.events('succeeded', True) == ['start', 'end']


def test_report_notified_once_after_commit(sqlite, sent):
    _running_op('op1')
    report = {'status': 'succeeded', 'pause_ms': 2.5, 'result': {
        'snapshot': {'driver': 'qemu', 'path': '/i/b.qcow2'},
        'disk': {'driver': 'qemu', 'qmp_socket': None,
                 'path': '/i/d1-op1.qcow2'},
        'size_bytes': 4096, 'online': False}, 'steps': [
        {'name': 'pause', 'status': 'done', 'duration_ms': 0.1},
        {'name': 'resume', 'status': 'done', 'duration_ms': 0.2,
         'detail': {'agent_pause_ms': 3.0, 'qemu_pause_ms': 2.5}}]}
    labels = {'action': 'create', 'mode': 'offline', 'status': 'succeeded',
              'requested_by': 'tenant'}
    before = prometheus_client.REGISTRY.get_sample_value(
        'livesnap_operations_total', labels) or 0
    assert dispatch.apply_report('op1', report)
    assert not dispatch.apply_report('op1', report)   # a duplicate
    assert [e for e, _ in sent] == ['livesnap.snapshot.create.end']
    data = sent[0][1]['livesnap_object.data']
    assert data['operation_id'] == 'op1' and data['disk'] == 'vda'
    assert data['pause_ms'] == 2.5 and data['agent_pause_ms'] == 3.0
    assert [s['name'] for s in data['steps']] == ['pause', 'resume']
    assert data['mode'] == 'offline'   # no QMP socket: the agent said so
    assert prometheus_client.REGISTRY.get_sample_value(
        'livesnap_operations_total', labels) == before + 1


def test_rolled_back_change_not_notified(sqlite, sent):
    _running_op('op2')
    with pytest.raises(RuntimeError):
        with db.transaction() as s:
            op = s.get(models.Operation, 'op2')
            operations.set_status(op, 'failed')
            raise RuntimeError('rolled back')
    assert sent == []
    with db.transaction() as s:
        operations.set_status(s.get(models.Operation, 'op2'), 'failed')
    assert [e for e, _ in sent] == ['livesnap.snapshot.create.error']


def test_database_gauges(sqlite):
    _running_op('op3')
    with db.transaction() as s:
        s.add(models.Snapshot(id='snap0', disk_id='d1', project_id='p1',
                              name='m', status='deleted',
                              image='/i/0.qcow2'))
        s.get(models.Snapshot, 'snap1').parent_id = 'snap0'
        s.get(models.Disk, 'd1').snapshot_id = 'snap1'
    families = {f.name: f for f in metrics.DatabaseCollector().collect()}

    def samples(name):
        return {tuple(sorted(s.labels.items())): s.value
                for s in families[name].samples}

    assert samples('livesnap_chain_depth_max') == {
        (('project_id', 'p1'),): 2}
    assert samples('livesnap_deferred_deletions') == {(): 1}
    assert samples('livesnap_hosts')[(('state', 'up'),)] == 1
    assert samples('livesnap_snapshots')[
        (('project_id', 'p1'), ('status', 'creating'))] == 1
    assert samples('livesnap_operations_active')[
        (('action', 'create'), ('status', 'running'))] == 1


def test_chain_depths_survive_a_cycle():
    assert metrics.chain_depths({'a': None, 'b': 'a', 'c': 'c'},
                                ['b', None, 'c', 'x']) == [2, 0, 1, 0]


def _app(seen, monkeypatch):
    """The pipeline of api-paste.ini, its API answering every request with
    what the middleware gave it.
    """
    def dispatch(self, req, req_id):
        seen.append(middleware.request_ids(req.environ))
        return webob.Response('ok')
    monkeypatch.setattr(api_app.API, '_dispatch', dispatch)
    return loader.load_app()


def test_request_id_and_global_request_id(monkeypatch):
    seen = []
    app = _app(seen, monkeypatch)
    gid = 'req-5a1e5a1e-0000-4000-8000-000000000001'
    resp = webob.Request.blank(
        '/v1/servers', headers={'X-OpenStack-Request-ID': gid}).get_response(
        app)
    assert resp.headers['x-openstack-request-id'] == seen[0][0]
    assert seen[0][0].startswith('req-') and seen[0][1] == gid
    resp = webob.Request.blank(
        '/v1/servers', headers={'X-OpenStack-Request-ID': 'bogus'}
    ).get_response(app)
    assert seen[1][1] is None


def test_context_takes_the_current_global_request_id():
    context.set_current('req-a', 'req-g')
    assert context.make('p1', request_id='req-a').global_request_id == \
        'req-g'
    assert context.make('p1', request_id='req-b').global_request_id is None
    rpc.ContextSerializer().deserialize_context(
        {'request_id': 'req-c', 'global_request_id': 'req-h'})
    record = logging.LogRecord('x', logging.INFO, __file__, 1, 'm', None,
                               None)
    context.RequestIdFilter().filter(record)
    assert record.request_ids == 'req-c req-h'


def test_rpc_context_is_oslo_contexts_to_dict_and_back():
    from oslo_context import context as oslo_context
    current = context.set_current('req-api', 'req-caller')
    current.user_id = 'u1'
    ctxt = context.make('p1', ['member'], request_id='req-api')
    assert isinstance(ctxt, oslo_context.RequestContext)
    assert oslo_context.get_current() is current   # made, not current
    sent = rpc.ContextSerializer().serialize_context(ctxt)
    assert sent == ctxt.to_dict() and sent['user'] == 'u1'
    got = rpc.ContextSerializer().deserialize_context(sent)
    assert isinstance(got, context.RequestContext)
    assert (got.request_id, got.global_request_id, got.project_id,
            got.user_id, got.roles, got.is_admin) == (
        'req-api', 'req-caller', 'p1', 'u1', ['member'], False)
    assert oslo_context.get_current() is got       # the endpoint's thread
    # What an older process sends.
    old = rpc.ContextSerializer().deserialize_context(
        {'project_id': 'p2', 'roles': ['reader'], 'request_id': 'req-old',
         'global_request_id': None})
    assert (old.project_id, old.roles, old.request_id) == (
        'p2', ['reader'], 'req-old')


def test_background_contexts_do_not_become_current():
    import threading

    from oslo_context import context as oslo_context
    seen = []

    def work():
        context.make('p1')
        seen.append(oslo_context.get_current())
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [None]


def test_credentials_are_the_request_context():
    from conductor.api import auth
    admin = auth.Credentials('admin', ['admin'], user_id='u0')
    member = auth.Credentials('p1', ['member'])
    assert isinstance(admin, context.RequestContext)
    assert admin.is_admin is True and member.is_admin is False
    assert member.roles == ['member', 'reader']
    assert admin.to_dict()['user'] == 'u0'


def test_healthcheck(sqlite, conf, monkeypatch):
    seen = []
    app = _app(seen, monkeypatch)
    resp = webob.Request.blank('/healthcheck').get_response(app)
    assert resp.status_int == 200, resp.text
    assert seen == []                  # not the API's business
    assert 'x-openstack-request-id' in resp.headers
    # The database is gone.
    conf.set('connection', 'postgresql+psycopg2://nobody@127.0.0.1:1/x',
             group='database')
    db.reset()
    resp = webob.Request.blank('/healthcheck').get_response(app)
    assert resp.status_int == 503


def test_healthcheck_bus_down(sqlite, conf, monkeypatch):
    conf.set('transport_url', 'rabbit://guest:guest@127.0.0.1:1/')
    app = _app([], monkeypatch)
    resp = webob.Request.blank(
        '/healthcheck', headers={'Accept': 'application/json'}
    ).get_response(app)
    assert resp.status_int == 503
    assert 'message bus unavailable' in resp.text


def test_grafana_dashboard_uses_livesnap_series():
    import json
    import re

    from agent import metrics as agent_metrics  # noqa: F401  (defines them)
    with open(os.path.join(generated.TOP, 'etc', 'grafana',
                           'livesnap.json')) as f:
        dashboard = json.load(f)
    known = {'livesnap_snapshots', 'livesnap_chain_depth_max',
             'livesnap_deferred_deletions', 'livesnap_hosts',
             'livesnap_operations_active', 'livesnap_agent_journal_entries',
             'livesnap_database_up'}
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith('livesnap'):
            known.update(s.name for s in family.samples)
            known.update(family.name + suffix for suffix in (
                '_bucket', '_count', '_sum', '_total'))
    exprs = [t['expr'] for p in dashboard['panels'] for t in p['targets']]
    assert exprs
    for expr in exprs:
        for name in re.findall(r'livesnap_\w+', expr):
            assert name in known, (name, expr)


def test_deferred_work_notified_as_the_conductors(sqlite, sent,
                                                  monkeypatch):
    with db.transaction() as s:
        s.add(models.Host(name='h1', last_heartbeat=models.utcnow()))
        s.add(models.Server(id='srv1', name='s', project_id='p1',
                            host='h1'))
        s.add(models.Disk(id='d1', server_id='srv1', name='vda',
                          locator=_DISK))
        s.add(models.Snapshot(id='snap0', disk_id='d1', project_id='p1',
                              name='old', status='deleted',
                              locator={'driver': 'qemu',
                                       'path': '/i/0.qcow2'},
                              size_bytes=512))
    dispatched = []
    monkeypatch.setattr(dispatch, 'send',
                        lambda ctxt, sent: dispatched.append(sent.id))
    op_id = dispatch.finish_deferred(context.make(), 'd1')
    assert dispatched == [op_id]
    assert [e for e, _ in sent] == ['livesnap.snapshot.delete.start']
    data = sent[0][1]['livesnap_object.data']
    assert data['requested_by'] == 'conductor'
    assert data['mode'] == 'physical' and data['snapshot_id'] == 'snap0'


def _group_running(op_id):
    """srv1 with vda and vdb, a group of both being created by op_id."""
    with db.transaction() as s:
        s.add(models.Host(name='h1', last_heartbeat=models.utcnow()))
        s.add(models.Server(id='srv1', name='s', project_id='p1',
                            host='h1'))
        s.add(models.SnapshotGroup(id='g1', project_id='p1',
                                   server_id='srv1', name='n',
                                   operation_id=op_id))
        for disk_id, name in (('d1', 'vda'), ('d2', 'vdb')):
            s.add(models.Disk(id=disk_id, server_id='srv1', name=name,
                              locator=_DISK, operation_id=op_id))
            s.add(models.Snapshot(id='snap-' + disk_id, disk_id=disk_id,
                                  project_id='p1', name='n', group_id='g1',
                                  status='creating', locator=_DISK))
        s.add(models.Operation(
            id=op_id, project_id='p1', server_id='srv1', disk_id='d1',
            snapshot_id='snap-d1', host='h1', action='create_group',
            status='running', steps=[], attempts=0, requested_by='tenant'))


def test_group_notification_names_the_group_and_every_member(sqlite, sent):
    _group_running('op-g')
    report = {'status': 'succeeded', 'pause_ms': 3.0, 'result': {
        'online': True, 'snapshots': [
            {'snapshot': _DISK, 'disk': dict(_DISK, path='/i/1.qcow2'),
             'size_bytes': 512},
            {'snapshot': _DISK, 'disk': dict(_DISK, path='/i/2.qcow2'),
             'size_bytes': 1024}]},
        'steps': [{'name': 'pause', 'status': 'done', 'duration_ms': 0.2},
                  {'name': 'resume', 'status': 'done', 'duration_ms': 0.3,
                   'detail': {'agent_pause_ms': 3.5}}]}
    assert dispatch.apply_report('op-g', report)
    assert [e for e, _ in sent] == ['livesnap.snapshot_group.create.end']
    data = sent[0][1]['livesnap_object.data']
    assert data['group_id'] == 'g1' and data['mode'] == 'online'
    assert data['disks'] == [
        notifications.member('d1', 'vda', 'snap-d1', 512),
        notifications.member('d2', 'vdb', 'snap-d2', 1024)]
    assert data['pause_ms'] == 3.0 and data['agent_pause_ms'] == 3.5
    assert [s['duration_ms'] for s in data['steps']] == [0.2, 0.3]
    assert (data['project_id'], data['server_id'], data['target']) == (
        'p1', 'srv1', None)


def test_clone_notification_names_the_new_disk(sqlite, sent):
    _running_op('op-c')
    with db.transaction() as s:
        op = s.get(models.Operation, 'op-c')
        op.action, op.mode = 'clone', 'linked'
        op.target = {'server_id': 'srv1', 'disk': 'vdc', 'disk_id': 'd9',
                     'mode': 'linked', 'name': None}
    with db.transaction() as s:
        operations.set_status(s.get(models.Operation, 'op-c'), 'failed')
    assert [e for e, _ in sent] == ['livesnap.snapshot.clone.error']
    data = sent[0][1]['livesnap_object.data']
    assert data['target'] == {'server_id': 'srv1', 'disk': 'vdc',
                              'disk_id': 'd9', 'mode': 'linked'}
    assert data['mode'] == 'linked' and data['group_id'] is None
    assert data['disks'] == [notifications.member('d1', 'vda', 'snap1',
                                                  None)]


def test_every_sample_has_the_same_fields():
    keys = {frozenset(notification_samples.sample_payload(op)[
        'livesnap_object.data']) for _, _, op in notification_samples.SAMPLES}
    assert len(keys) == 1
    events = {e for e, _, _ in notification_samples.SAMPLES}
    for prefix in notifications.EVENT_PREFIXES.values():
        assert {prefix + '.start', prefix + '.end',
                prefix + '.error'} <= events, prefix


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_policy_runs_are_requested_by_the_policy(conf, tmp_path, database,
                                                 sent):
    """A policy's snapshots and the deletions that prune them say
    ``requested_by: policy``, not tenant (nor count in its rate).
    """
    import datetime
    import time

    from agent import images
    from conductor import schedule_runner
    from livesnap_tools import fixtures
    from tests.functional import scenarios
    conf.set('periodic_interval', 3600, group='conductor')
    conf.set('policy_min_interval', 1, group='conductor')
    dep = fixtures.InProcessDeployment(conf, tmp_path)
    dep.start()
    try:
        base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
        images.create_base(base, 4 * scenarios.MiB)
        dep.register_server('srv1', base)
        policy_id = dep.ok('POST', '/v1/policies', {'policy': {
            'name': 'p', 'server_id': 'srv1', 'interval': 3600,
            'retention': {'keep_last': 1}}}, status=201)['policy']['id']
        for _ in range(2):
            with db.transaction() as s:
                s.get(models.SnapshotPolicy, policy_id).next_run = (
                    schedule_runner.utcnow_seconds()
                    - datetime.timedelta(seconds=1))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                schedule_runner.run_periodic()
                with db.transaction() as s:
                    busy = s.query(models.Operation).filter(
                        models.Operation.status.in_(
                            ('pending', 'running'))).count()
                    open_runs = s.query(models.PolicyRun).filter(
                        (models.PolicyRun.outcome == 'pending')
                        | models.PolicyRun.prune_status.in_(
                            ('waiting', 'pending'))).count()
                if not busy and not open_runs:
                    break
                time.sleep(0.1)
            time.sleep(1.1)   # order the runs' times
        with db.transaction() as s:
            ops = {(o.action, o.requested_by) for o in
                   s.query(models.Operation).all()}
    finally:
        dep.stop()
    assert ops == {('create', 'policy'), ('delete', 'policy')}
    ended = [d['livesnap_object.data'] for e, d in sent
             if e.endswith('.end')]
    assert ended and all(d['requested_by'] == 'policy' for d in ended)
