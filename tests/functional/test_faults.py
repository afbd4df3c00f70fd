"""Fault injection: whatever dies, and whenever, the VM runs again, every
operation ends with a reason, and the database and the disks agree.

On a running QEMU VM over RabbitMQ, with PostgreSQL:

* the agent is killed with SIGKILL at every step of an online create and of
  an online merge-delete (through ``[agent] fault_points``, see
  docs/faults.md), then started again: its journal replay resumes the VM
  and finishes the operation;
* the broker (a private RabbitMQ node) is restarted in the middle of
  operations;
* a conductor is killed mid-operation while a second one runs;
* the same task is sent twice; tasks go to a host that is down.

After each fault: the VM runs, every operation ended ``succeeded`` or
``failed`` with a reason, every image passes ``qemu-img check``, every
layer holds what the model says, and the audit finds no drift.  The
summary line gives the number of faults and the longest pause seen.
"""

import contextlib
import time

import pytest

from agent import rpcapi as agent_rpcapi
from conductor import audit
from conductor.db import api as db
from livesnap import context
from livesnap import rpc
from tests import broker
from tests import fixtures
from tests.functional import tenant

pytestmark = pytest.mark.functional

EXTRA = ('[conductor]\noperation_timeout = 4\nperiodic_interval = 0.5\n'
         'host_down_time = 3\nagent_call_timeout = 2\n')

CREATE_STEPS = ('prepare', 'pause', 'pivot', 'resume')
MERGE_STEPS = ('prepare', 'pause', 'merge', 'resume', 'reparent', 'delete',
               'purge')


def _points(action, steps):
    return ['%s:%s:%s' % (action, s, w) for s in steps
            for w in ('before', 'after')] + ['%s:report:before' % action]


CREATE_POINTS = _points('create_snapshot', CREATE_STEPS)
MERGE_POINTS = _points('delete_snapshot', MERGE_STEPS)

STATS = {'faults': 0, 'longest_pause_s': 0.0}


@pytest.fixture
def deployment(tmp_path, rabbit_url, postgres_url, conf):
    fixtures.pg_reset_schema(postgres_url)
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url,
                                     extra=EXTRA)
    _use_bus(conf, dep, postgres_url)
    try:
        dep.start()
        yield dep
    except Exception:
        _dump(dep)
        raise
    finally:
        dep.stop()
        rpc.cleanup()


def _use_bus(conf, dep, database_url):
    """Let this test process talk to the deployment's agents (audit)."""
    rpc.cleanup()
    conf.set('transport_url', dep.transport_url)
    conf.set('control_exchange', dep.control_exchange)
    conf.set('connection', database_url, group='database')
    db.reset()


def _dump(dep):
    for name in dep.procs:
        print('--- %s log ---\n%s' % (name, dep.log(name)))


@contextlib.contextmanager
def _driving(dep, tmp_path):
    """A tenant driving server srv1 on a running VM; on failure the
    deployment's logs are printed; the VM is always killed."""
    d = tenant.TenantDriver(dep, tmp_path, dep.database_url, online=True)
    try:
        yield d
    except BaseException:
        _dump(dep)
        raise
    finally:
        d.close()


def _wait_running(vm, since, timeout=60):
    """Wait until the VM runs; record how long it was not running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if vm.status() == 'running':
                STATS['longest_pause_s'] = max(STATS['longest_pause_s'],
                                               time.monotonic() - since)
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError('VM still not running %ss after the fault'
                         % timeout)


def _wait_heard(dep, timeout=120):
    since = time.time()
    deadline = time.monotonic() + timeout
    while not dep._host_alive(since):
        assert time.monotonic() < deadline, 'agent never heard again'
        time.sleep(0.2)


def _no_drift():
    findings = audit.audit()
    assert findings == {fixtures.HOST: []}, findings


def _inject(dep, d, point, start_operation):
    """Arm ``point``, start an operation, let the agent die there, start
    it again, and return the operation once it has ended."""
    dep.kill('agent')
    dep.start_agent(fault_points=[point])
    op_id = start_operation()
    code = dep.wait_exit('agent', timeout=120)
    assert code == -9, 'agent exited %s instead of dying at %s' % (
        code, point)
    STATS['faults'] += 1
    died = time.monotonic()
    dep.start_agent()
    _wait_running(d.vm, died)
    op = dep.wait_operation(op_id, timeout=120)
    assert op['status'] in ('succeeded', 'failed'), op
    if op['status'] == 'failed':
        assert op['error'], op
    return op


def test_agent_killed_at_every_step(deployment, tmp_path):
    dep = deployment
    with _driving(dep, tmp_path) as d:
        slot = 0
        for point in CREATE_POINTS:
            d.write(slot % 8, 0x10 + slot)
            slot += 1
            holder = {}

            def create():
                body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                              {'snapshot': {'name': point, 'disk': 'vda'}},
                              status=202)
                holder['id'] = body['snapshot']['id']
                return body['operation']['id']

            op = _inject(dep, d, point, create)
            assert op['status'] == 'succeeded', (point, op)
            assert op['steps'][0]['name'] == 'recover' or \
                point.endswith('report:before'), (point, op['steps'])
            d.model.snapshot(holder['id'])
            d.check()
            _no_drift()
            # Keep the chain short: fold the new snapshot back (no fault).
            d.delete(holder['id'], 'merge')

        for point in MERGE_POINTS:
            d.write(slot % 8, 0x10 + slot)
            slot += 1
            snap = d.snapshot('m-' + point)
            d.write(slot % 8, 0x10 + slot)
            slot += 1

            def delete():
                op = dep.ok('DELETE', '/v1/snapshots/%s' % snap,
                            status=202)['operation']
                assert op['mode'] == 'merge'
                return op['id']

            op = _inject(dep, d, point, delete)
            assert op['status'] == 'succeeded', (point, op)
            d.model.forget(snap)
            d.check()
            _no_drift()


def test_same_task_twice_and_host_down(deployment, tmp_path):
    dep = deployment
    with _driving(dep, tmp_path) as d:
        d.write(0, 0x21)
        snap = d.snapshot('once')
        op = [o for o in dep.ok('GET', '/v1/operations')['operations']
              if o['snapshot_id'] == snap][0]
        with db.transaction() as s:
            from conductor.db import models
            task = s.get(models.Operation, op['id']).task
        # The same task again, straight over the bus: answered from the
        # journal, nothing done twice.
        agent_rpcapi.AgentAPI().create_snapshot(context.make(),
                                                fixtures.HOST, task)
        agent_rpcapi.AgentAPI().create_snapshot(context.make(),
                                                fixtures.HOST, task)
        STATS['faults'] += 2
        time.sleep(1)
        assert dep.wait_operation(op['id'])['status'] == 'succeeded'
        d.check()
        _no_drift()

        # A task cast just as the agent dies (before the conductor sees
        # the host down) waits in the agent's queue.  Its deadline passes,
        # the agent does not answer, the operation fails "in doubt" with
        # the disk still locked; when the agent comes back it refuses the
        # expired task, and the disk is released.  Nothing is half done.
        dep.kill('agent')
        STATS['faults'] += 1
        d.write(1, 0x22)
        body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                      {'snapshot': {'name': 'orphaned', 'disk': 'vda'}},
                      status=202)
        lost = body['operation']['id']
        deadline = time.monotonic() + 60
        while True:
            op = dep.ok('GET', '/v1/operations/%s' % lost)['operation']
            if op['status'] == 'failed':
                break
            assert time.monotonic() < deadline, op
            time.sleep(0.2)
        assert 'does not answer' in op['error']
        assert dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
            'busy'] is True

        # A host whose agent is gone: new work is refused with 503.
        status, body = dep.api('POST', '/v1/servers/srv1/snapshots',
                               {'snapshot': {'name': 'x', 'disk': 'vda'}})
        assert status == 503, body
        assert body['error']['code'] == 'host_down'
        STATS['faults'] += 1

        dep.start_agent()
        deadline = time.monotonic() + 60
        while dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
                'busy']:
            assert time.monotonic() < deadline, 'disk never released'
            time.sleep(0.2)
        op = dep.ok('GET', '/v1/operations/%s' % lost)['operation']
        assert op['status'] == 'failed' and op['error'], op
        assert d.vm.status() == 'running'
        d.check()
        _no_drift()

        # And the disk works again.
        d.snapshot('after-host-came-back')
        d.check()
        _no_drift()


def test_conductor_killed_mid_operation(deployment, tmp_path):
    dep = deployment
    port2 = fixtures.free_port()
    dep.start_conductor('conductor2', port=port2)
    with _driving(dep, tmp_path) as d:
        for i in range(3):
            d.write(i, 0x30 + i)
            body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                          {'snapshot': {'name': 'c%d' % i, 'disk': 'vda'}},
                          status=202)
            dep.kill('conductor')
            STATS['faults'] += 1
            dep.base_url = 'http://127.0.0.1:%d' % port2
            op = dep.wait_operation(body['operation']['id'], timeout=120)
            assert op['status'] == 'succeeded', op
            d.model.snapshot(body['snapshot']['id'])
            assert d.vm.status() == 'running'
            d.check()
            _no_drift()
            # Bring the first conductor back for the next round.
            dep.base_url = 'http://127.0.0.1:%d' % dep.port
            dep.start_conductor('conductor')


@pytest.mark.skipif(not broker.available(), reason='rabbitmq-server missing')
def test_broker_restarted_mid_operation(tmp_path, postgres_url, conf):
    fixtures.pg_reset_schema(postgres_url)
    node = broker.PrivateRabbit(fixtures.free_port(), fixtures.free_port())
    node.start()
    dep = fixtures.ProcessDeployment(tmp_path, node.url, postgres_url,
                                     extra=EXTRA)
    _use_bus(conf, dep, postgres_url)
    d = None
    try:
        dep.start()
        d = tenant.TenantDriver(dep, tmp_path, postgres_url, online=True)
        for i in range(2):
            d.write(i, 0x40 + i)
            body = dep.ok('POST', '/v1/servers/srv1/snapshots',
                          {'snapshot': {'name': 'b%d' % i, 'disk': 'vda'}},
                          status=202)
            node.restart()
            STATS['faults'] += 1
            op = dep.wait_operation(body['operation']['id'], timeout=180)
            assert op['status'] in ('succeeded', 'failed'), op
            if op['status'] == 'succeeded':
                d.model.snapshot(body['snapshot']['id'])
            else:
                assert op['error']
            _wait_running(d.vm, time.monotonic())
            d.check()
            # The agent reconnects and is heard again.
            _wait_heard(dep)
        # The deployment still works after the restarts.
        d.write(5, 0x4f)
        d.snapshot('after-restarts')
        d.check()
        _no_drift()
    except Exception:
        _dump(dep)
        raise
    finally:
        if d is not None:
            d.close()
        dep.stop()
        rpc.cleanup()
        node.destroy()
