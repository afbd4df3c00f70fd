"""livesnap benchmarks: how long the VM pauses, how long the work takes.

Run through ``./tools/bench`` (``--quick``, ``--only NAME``, ``--json``).
It prints one plain-text table per section:

``create``
    Online snapshot creation at driver level: :class:`QemuDriver` on a
    ``-M none`` QEMU whose qcow2 disk has data in it, N snapshots in a row.
    ``pause_ms`` p50/p95/max and the whole create.  Compared with creating
    the overlay *inside* the pause (stop, qemu-img create, blockdev-add,
    blockdev-snapshot, cont by hand), which is what the design avoids.
``merge-online``
    Deleting a snapshot with one child while the VM runs (``block-stream``
    into the live image), by the amount of data in the snapshot: total,
    the copy (``prepare`` step) and ``pause_ms``.
``merge-offline``
    The same merge with no QEMU running (``qemu-img rebase``, safe mode).
``e2e``
    ``POST /v1/servers/ID/snapshots`` until the operation reads
    ``succeeded``, through the REST API: conductor and agent in this process
    over ``kombu+memory``, and as real processes over RabbitMQ with
    PostgreSQL.  Deletes (merges) of the snapshots afterwards, too.
``memory``
    VmRSS of the agent and conductor processes idle and after the e2e
    operations, and of a ``-M none`` QEMU.
``api``
    Requests per second, mean and p99 latency and the conductor's CPU per
    request for ``GET /v1/operations/{id}``, ``GET /v1/servers/{id}/
    snapshots`` and ``POST`` snapshot, with C concurrent clients against a
    conductor process on RabbitMQ and PostgreSQL
    (``livesnap_tools.bench_api``).
``load`` (only when named: ``--only load``)
    The production shape under load: many agent processes, VMs and
    tenants, one then two conductors; see :mod:`livesnap_tools.bench_load`.

Timings are wall-clock on whatever machine runs it; on a shared box they are
noisy, which is why they live here and not in timed test assertions.
Every VM, process, database and temporary file is removed at the end, also
after an error, Ctrl-C or SIGTERM.
"""

import argparse
import datetime
import json
import logging
import os
import pathlib
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

MiB = 1024 * 1024
GiB = 1024 * MiB

SECTIONS = ('pause', 'create', 'merge-online', 'merge-offline', 'e2e',
            'memory', 'api', 'ceiling')
#: sections run only when named with --only (they take minutes)
OPT_IN_SECTIONS = ('load', 'libvirt')

#: extra configuration for the e2e deployments: no rate limit, no depth
#: limit, no quota (the benchmark makes many operations in a row)
LIMITS_EXTRA = ('[api]\noperations_per_minute = 0\n'
                '[conductor]\nmax_chain_depth = 0\nsnapshot_quota = -1\n')

LOG = logging.getLogger('livesnap.bench')


# -- clean-up ---------------------------------------------------------------
class Janitor(object):
    """Everything the benchmark created, undone in reverse order."""

    def __init__(self):
        self._undo = []

    def push(self, what, func, *args):
        self._undo.append((what, func, args))
        return func

    def tmpdir(self, prefix='lsb-'):
        # Under /tmp, short: QMP socket paths are limited to 107 bytes.
        path = tempfile.mkdtemp(prefix=prefix)
        self.push('rm %s' % path, shutil.rmtree, path, True)
        return path

    def vm(self, vm):
        self.push('kill QEMU %s' % vm.qmp_socket, vm.kill)
        return vm

    def run(self):
        while self._undo:
            what, func, args = self._undo.pop()
            try:
                func(*args)
            except Exception as exc:  # noqa - keep cleaning
                print('bench: clean-up %s failed: %s' % (what, exc),
                      file=sys.stderr)


JANITOR = Janitor()


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


# -- statistics -------------------------------------------------------------
def percentile(values, pct):
    """Linear-interpolated percentile of ``values`` (None if empty)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    rank = (len(vals) - 1) * pct / 100.0
    lo = int(rank)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (rank - lo)


def summary(values):
    vals = [v for v in values if v is not None]
    return {'n': len(vals), 'p50': percentile(vals, 50),
            'p95': percentile(vals, 95), 'max': max(vals) if vals else None,
            'min': min(vals) if vals else None}


def _ms(seconds):
    return round(seconds * 1000.0, 3)


def _step_ms(rec, name):
    """Total duration of the steps called ``name`` (ms)."""
    found = [s['duration_ms'] for s in rec.steps if s['name'] == name]
    return round(sum(found), 3) if found else None


def rss_kib(pid):
    """VmRSS of ``pid`` in KiB, from /proc/PID/status (None if gone)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


# -- VMs and images ---------------------------------------------------------
def _quiet_logging(verbose):
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format='%(asctime)s %(levelname)s %(name)s %(message)s',
        stream=sys.stderr)
    if not verbose:
        for name in ('amqp', 'kombu', 'oslo_messaging', 'qemu.qmp',
                     'alembic', 'tenacity'):
            logging.getLogger(name).setLevel(logging.ERROR)


def _write(vm, pattern, offset, length, chunk=32 * MiB):
    """Write ``length`` bytes through QEMU in chunks (HMP has a timeout)."""
    done = 0
    while done < length:
        n = min(chunk, length - done)
        vm.write(pattern, offset + done, n)
        done += n


def _start_vm(directory, disk_size, data, name='bench'):
    from agent import images
    from livesnap_tools import testvm
    base = os.path.join(directory, 'base.qcow2')
    images.create_base(base, disk_size)
    vm = JANITOR.vm(testvm.TestVM(base, os.path.join(directory, 'q.sock'),
                                  name=name))
    vm.start()
    if data:
        _write(vm, 0x5a, 0, data)
        vm.flush()
    return vm, base


def _driver(directory):
    from agent.driver.qemu import driver as qemu
    return qemu.QemuDriver([directory])


def _disk(qmp_socket, path):
    """The QEMU driver's disk locator of ``path``."""
    return {'driver': 'qemu', 'qmp_socket': qmp_socket, 'path': path}


def _layer_name(path):
    """The layer name whose file (beside the live one) is ``path``."""
    return os.path.basename(path)[:-len('.qcow2')]


# -- 1. online create -------------------------------------------------------
def _journal_listener(directory, op_id):
    """The agent's own write-ahead journal listener (agent.task_runner), on
    journal in ``directory``: what the agent adds around each step.
    """
    import types

    from agent import journal
    from agent import task_runner
    from livesnap import conf  # noqa: F401  (registers [agent] options)
    runner = types.SimpleNamespace(journal=journal.Journal(directory))
    return task_runner.TaskRunner._journal_listener(runner, 'create', op_id)


def _create_by_design(driver, disk, new, listener=None):
    from agent import steps
    rec = steps.StepRecorder(listener=listener)
    t0 = time.monotonic()
    res = driver.create_snapshot(disk, _layer_name(new), rec)
    total = time.monotonic() - t0
    disk.update(res['disk'])
    return {'pause_ms': rec.pause_ms, 'total_ms': _ms(total),
            'prepare_ms': _step_ms(rec, 'prepare'),
            'pivot_ms': _step_ms(rec, 'pivot'),
            'stop_ms': _step_ms(rec, 'pause')}


def _create_inside_pause(session, state, new):
    """The naive order: stop, qemu-img create, blockdev-add,
    blockdev-snapshot, cont.  ``state`` carries the current top node.
    """
    from agent.driver.qemu import graph
    from agent import images
    node = graph.node_name_for(new)
    t0 = time.monotonic()
    session.execute('stop')
    stopped = time.monotonic()
    stop_ms = _ms(stopped - t0)
    images.create_overlay(new, state['image'])
    created = time.monotonic()
    session.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': node,
        'file': {'driver': 'file', 'filename': new}, 'backing': None})
    session.execute('blockdev-snapshot', {'node': state['node'],
                                          'overlay': node})
    pivoted = time.monotonic()
    session.execute('cont')
    resumed = time.monotonic()
    state.update(node=node, image=new)
    # counted like the driver does: from the moment stop is sent
    return {'pause_ms': _ms(resumed - t0), 'total_ms': _ms(resumed - t0),
            'prepare_ms': _ms(created - stopped),
            'pivot_ms': _ms(pivoted - created), 'stop_ms': stop_ms}


def _empty_pause(session):
    """QMP stop then cont, nothing between: the floor of any pause."""
    t0 = time.monotonic()
    session.execute('stop')
    stopped = time.monotonic()
    session.execute('cont')
    return {'pause_ms': _ms(time.monotonic() - t0), 'total_ms': None,
            'prepare_ms': None, 'pivot_ms': None,
            'stop_ms': _ms(stopped - t0)}


VARIANTS = {
    'design': 'overlay created before the pause (design)',
    'journal': 'same, with the agent\'s fsynced journal',
    'inside-pause': 'overlay created inside the pause (by hand)',
    'floor': 'stop + cont only, nothing between (floor)',
}


def bench_create(opts):
    rows = []
    notes = []
    for variant in ('design', 'journal', 'inside-pause', 'floor'):
        if variant != 'design' and not opts.compare:
            continue
        d = JANITOR.tmpdir()
        vm, base = _start_vm(d, opts.disk_size, opts.create_data)
        driver = _driver(d)
        disk = _disk(vm.qmp_socket, base)
        samples = []
        session = None
        state = {'node': 'disk0', 'image': base}
        try:
            if variant in ('inside-pause', 'floor'):
                session = vm.session().open()
            for i in range(opts.n):
                new = os.path.join(d, 'layer-%03d.qcow2' % i)
                if variant in ('design', 'journal'):
                    listener = (_journal_listener(os.path.join(d, 'journal'),
                                                  'op-%03d' % i)
                                if variant == 'journal' else None)
                    s = _create_by_design(driver, disk, new, listener)
                elif variant == 'floor':
                    s = _empty_pause(session)
                else:
                    s = _create_inside_pause(session, state, new)
                samples.append(s)
                # a little new data in every layer, outside the timing
                if session is not None:
                    session.hmp('qemu-io %s "write -P 0x%02x %d 65536"'
                                % (state['node'], i & 0xff, i * MiB))
                else:
                    vm.write(i & 0xff, i * MiB, 65536)
            status = (session.status() if session is not None
                      else vm.status())
            if status != 'running':
                raise RuntimeError('%s: VM %s at the end' % (variant, status))
        finally:
            if session is not None:
                session.close()
            vm.kill()
        rows.append({
            'variant': VARIANTS[variant],
            'key': variant, 'n': len(samples),
            'pause_ms': summary([s['pause_ms'] for s in samples]),
            'stop_ms': summary([s['stop_ms'] for s in samples]),
            'pivot_ms': summary([s['pivot_ms'] for s in samples]),
            'prepare_ms': summary([s['prepare_ms'] for s in samples]),
            'total_ms': summary([s['total_ms'] for s in samples]),
        })
    notes.append('disk %s MiB virtual with %s MiB written before the first '
                 'snapshot, 64 KiB more into every layer; the chain grows '
                 'by one layer per snapshot.'
                 % (opts.disk_size // MiB, opts.create_data // MiB))
    notes.append('design rows: pause_ms = QEMU\'s STOP..RESUME window of '
                 'the one-write paused section (stop, blockdev-snapshot, '
                 'cont), as the driver records it; stop cmd = the step '
                 'pause (writing the batch, reading stop\'s answer); pivot = '
                 'the step pivot (reading blockdev-snapshot\'s answer); '
                 'overlay create = step prepare (qemu-img create, fsyncs, '
                 'blockdev-add); the journal row adds '
                 'agent.task_runner\'s write-ahead journal listener '
                 '(nothing written inside the pause). The inside-pause and '
                 'floor rows are by hand, '
                 'each reply awaited, timed by the client (stop sent .. '
                 'cont answered).')
    return {'rows': rows, 'notes': notes}


# -- 2. online merge --------------------------------------------------------
def bench_merge_online(opts):
    from agent import steps
    d = JANITOR.tmpdir()
    vm, base = _start_vm(d, opts.disk_size, 16 * MiB if not opts.quick
                         else 4 * MiB)
    driver = _driver(d)
    disk = _disk(vm.qmp_socket, base)
    rows = []
    counter = [0]

    def snapshot():
        new = os.path.join(d, 'l%03d.qcow2' % counter[0])
        counter[0] += 1
        res = driver.create_snapshot(disk, _layer_name(new),
                                     steps.StepRecorder())
        disk.update(res['disk'])
        return res['snapshot']['path']

    try:
        # base's data frozen: the parent of every layer merged below
        parent = snapshot()
        for size, leaf in [(x, y) for x in opts.sizes for y in (False, True)]:
            samples = []
            for rep in range(opts.reps):
                # S MiB into the live layer, which then becomes a snapshot
                # with one child (the new live layer) and parent ``base``.
                _write(vm, 0xa0 + rep, 0, size)
                vm.flush()  # else the next create's stop flushes it
                snap = snapshot()
                vm.write(0xee, 0, 65536)  # a little data in the live layer
                # the same data copied by a plain qemu-img convert
                copy = os.path.join(d, 'convert.qcow2')
                t0 = time.monotonic()
                subprocess.run(['qemu-img', 'convert', '-U', '-f', 'qcow2',
                                '-O', 'qcow2', snap, copy], check=True,
                               capture_output=True, stdin=subprocess.DEVNULL)
                convert_ms = _ms(time.monotonic() - t0)
                os.unlink(copy)
                rec = steps.StepRecorder()
                t0 = time.monotonic()
                # child_is_leaf lets the driver commit the small live layer
                # into the snapshot instead of streaming the snapshot
                res = driver.merge(disk, driver.image(snap),
                                   driver.image(parent), disk, rec,
                                   child_is_leaf=leaf)
                total = time.monotonic() - t0
                if not res['online']:
                    raise RuntimeError('merge did not run online')
                disk.update(res['disk'])
                stop = _step_ms(rec, 'pause')
                samples.append({'total_ms': _ms(total),
                                'prepare_ms': _step_ms(rec, 'prepare'),
                                'stop_ms': stop,
                                'merge_ms': _step_ms(rec, 'merge'),
                                'delete_ms': _step_ms(rec, 'delete'),
                                'pause_ms': rec.pause_ms,
                                'agent_pause_ms': rec.agent_pause_ms,
                                'convert_ms': convert_ms,
                                'direction': res['direction']})
            prep = summary([s['prepare_ms'] for s in samples])
            conv = summary([s['convert_ms'] for s in samples])
            rows.append({
                'direction': '/'.join(sorted({s['direction']
                                              for s in samples})),
                'convert_mib_s': (round(size / MiB / (conv['p50'] / 1000.0),
                                        1) if conv['p50'] else None),
                'agent_pause_ms': summary([s['agent_pause_ms']
                                           for s in samples]),
                'size_mib': size // MiB, 'n': len(samples),
                'total_ms': summary([s['total_ms'] for s in samples]),
                'prepare_ms': prep,
                'stop_ms': summary([s['stop_ms'] for s in samples]),
                'merge_ms': summary([s['merge_ms'] for s in samples]),
                'delete_ms': summary([s['delete_ms'] for s in samples]),
                'pause_ms': summary([s['pause_ms'] for s in samples]),
                'copy_mib_s': (round(size / MiB / (prep['p50'] / 1000.0), 1)
                               if prep['p50'] else None)})
        if vm.status() != 'running':
            raise RuntimeError('VM not running after the merges')
    finally:
        vm.kill()
    return {'rows': rows, 'notes': [
        'snapshot with S MiB of its own data, one child (the live layer), '
        'parent = the base image; disk %d MiB virtual.'
        % (opts.disk_size // MiB),
        'copy = step prepare (the block job copying while the VM runs, '
        'then an fsync); merge = step merge (reading job-finalize\'s '
        'answer, or waiting for the commit job to end); delete = step '
        'delete, after the resume (blockdev-del, rename); stream: '
        'block-stream of the snapshot into the live layer, then '
        'stop, job-finalize, cont in one write; pause_ms = QEMU\'s '
        'STOP..RESUME; commit: the live layer (64 KiB) is committed into the '
        'snapshot (block-commit, job-complete: QEMU drains the disk\'s I/O '
        'and pivots), pause_ms = job-complete written .. job concluded; '
        'copy MiB/s = data in the snapshot / copy time, either way; '
        'convert = qemu-img convert of the snapshot (the same data) in the '
        'same run.',
        'values are p50 over %d run(s) per size; pause max in brackets.'
        % opts.reps]}


# -- 3. offline merge -------------------------------------------------------
def _qemu_io_write(image, pattern, offset, length):
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0x%02x %d %d' % (pattern, offset, length),
                    image], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=600)


def bench_merge_offline(opts):
    from agent import images
    from agent import steps
    rows = []
    for size in opts.sizes:
        samples = []
        for rep in range(opts.reps):
            d = JANITOR.tmpdir()
            try:
                base = os.path.join(d, 'base.qcow2')
                snap = os.path.join(d, 'snap.qcow2')
                child = os.path.join(d, 'child.qcow2')
                images.create_base(base, opts.disk_size)
                _qemu_io_write(base, 0x5a, 0, 16 * MiB)
                images.create_overlay(snap, base)
                _qemu_io_write(snap, 0xa0, 0, size)
                images.create_overlay(child, snap)
                _qemu_io_write(child, 0xc0, size, MiB)
                driver = _driver(d)
                rec = steps.StepRecorder()
                t0 = time.monotonic()
                disk = _disk(None, child)
                res = driver.merge(disk, driver.image(snap),
                                   driver.image(base), disk, rec)
                total = time.monotonic() - t0
                if res['online']:
                    raise RuntimeError('offline merge ran online?')
                samples.append({'total_ms': _ms(total),
                                'merge_ms': _step_ms(rec, 'merge')})
            finally:
                shutil.rmtree(d, ignore_errors=True)
        merge = summary([s['merge_ms'] for s in samples])
        rows.append({'size_mib': size // MiB, 'n': len(samples),
                     'total_ms': summary([s['total_ms'] for s in samples]),
                     'merge_ms': merge,
                     'copy_mib_s': (round(size / MiB / (merge['p50'] / 1e3),
                                          1) if merge['p50'] else None)})
    return {'rows': rows, 'notes': [
        'no QEMU: qemu-img rebase -b PARENT (safe mode) of the child, then '
        'the snapshot file is removed; disk %d MiB virtual, parent holds '
        '16 MiB. Safe mode compares the old and new backing over the whole '
        'virtual disk, so its time also grows with the disk size.'
        % (opts.disk_size // MiB)]}


# -- 4 and 5. end to end and memory -----------------------------------------
def _poll_until_done(dep, op_id, timeout=120, interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        op = dep.ok('GET', '/v1/operations/%s' % op_id)['operation']
        if op['status'] in ('succeeded', 'failed'):
            return op
        if time.monotonic() > deadline:
            raise RuntimeError('operation %s still %s' % (op_id,
                                                           op['status']))
        time.sleep(interval)


def _server_ms(op):
    """updated_at - created_at of an operation (conductor's clock), ms."""
    try:
        a = datetime.datetime.fromisoformat(op['created_at'].rstrip('Z'))
        b = datetime.datetime.fromisoformat(op['updated_at'].rstrip('Z'))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return round((b - a).total_seconds() * 1000.0, 3)


def _drive(dep, n, data, vm_dir, rss_probe=None):
    """Boot a VM, register it, N creates then N deletes through the API.
    Returns latencies and (via ``rss_probe``) memory samples.
    """
    from agent import images
    from livesnap_tools import testvm
    base = os.path.join(dep.image_dir, 'srv-vda.qcow2')
    images.create_base(base, 256 * MiB)
    vm = JANITOR.vm(testvm.TestVM(base, os.path.join(vm_dir, 'e.sock'),
                                  name='bench-e2e'))
    vm.start()
    out = {'create': [], 'delete': [], 'rss': {}}
    try:
        _write(vm, 0x5a, 0, data)
        dep.register_server('srv', base, qmp_socket=vm.qmp_socket)
        if rss_probe:
            out['rss']['idle'] = rss_probe(vm)
        snaps = []
        for i in range(n):
            vm.write(i & 0xff, i * MiB, 65536)
            t0 = time.monotonic()
            body = dep.ok('POST', '/v1/servers/srv/snapshots',
                          {'snapshot': {'name': 's%d' % i, 'disk': 'vda'}},
                          status=202)
            op = _poll_until_done(dep, body['operation']['id'])
            lat = time.monotonic() - t0
            if op['status'] != 'succeeded':
                raise RuntimeError('create failed: %s' % op.get('error'))
            snaps.append(body['snapshot']['id'])
            out['create'].append({'latency_ms': _ms(lat),
                                  'server_ms': _server_ms(op),
                                  'pause_ms': op['pause_ms']})
        # Oldest first: each has one child, so each is a merge.
        for snap_id in snaps:
            t0 = time.monotonic()
            body = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id, status=202)
            op = _poll_until_done(dep, body['operation']['id'])
            lat = time.monotonic() - t0
            if op['status'] != 'succeeded':
                raise RuntimeError('delete failed: %s' % op.get('error'))
            out['delete'].append({'latency_ms': _ms(lat),
                                  'server_ms': _server_ms(op),
                                  'pause_ms': op['pause_ms'],
                                  'mode': op['mode']})
        if rss_probe:
            out['rss']['after'] = rss_probe(vm)
        if vm.status() != 'running':
            raise RuntimeError('VM not running after the e2e operations')
    finally:
        vm.kill()
    return out


def run_inprocess(opts):
    from conductor.db import api as db
    from livesnap import rpc
    from livesnap_tools import fixtures
    tmp = pathlib.Path(JANITOR.tmpdir())
    conf = fixtures.ConfFixture()
    dep = None
    try:
        conf.set('connection', 'sqlite:///%s' % (tmp / 'livesnap.sqlite'),
                 group='database')
        conf.set('operations_per_minute', 0, group='api')
        conf.set('max_chain_depth', 0, group='conductor')
        conf.set('snapshot_quota', -1, group='conductor')
        db.reset()
        db.sync()
        dep = fixtures.InProcessDeployment(conf, tmp)
        dep.start()
        return _drive(dep, opts.e2e_n, opts.e2e_data, str(tmp))
    finally:
        if dep is not None:
            dep.stop()
        rpc.cleanup()
        db.reset()
        conf.cleanup()


_PROCESS_RESULT = {}


def run_processes(opts):
    """Conductor and agent as processes over RabbitMQ (+ PostgreSQL if
    reachable, else SQLite).  Cached: e2e and memory share one run.
    """
    if 'error' in _PROCESS_RESULT:
        raise RuntimeError('the multi-process run failed earlier: %s'
                           % _PROCESS_RESULT['error'])
    if 'result' in _PROCESS_RESULT:
        return _PROCESS_RESULT['result']
    try:
        result = _run_processes(opts)
    except Exception as exc:
        _PROCESS_RESULT['error'] = '%s: %s' % (exc.__class__.__name__, exc)
        raise
    _PROCESS_RESULT['result'] = result
    return result


def _private_vhost(result):
    """A vhost of our own on the shared broker, removed at the end.

    oslo.messaging names a topic's queue after the topic alone (the
    control_exchange only names the exchange), so every livesnap conductor
    on one vhost consumes from the same ``livesnap-conductor`` queue: a
    benchmark on ``/`` would take other deployments' heartbeats and reports
    (and they ours).  A vhost isolates queues.
    """
    from livesnap_tools import fixtures
    try:
        name = fixtures.rabbit_add_vhost()
        JANITOR.push('delete vhost %s' % name, fixtures.rabbit_delete_vhost,
                     name)
    except (OSError, subprocess.SubprocessError) as exc:
        result['notes'].append(
            'could not create a private RabbitMQ vhost (%s): used "/", '
            'shared with any other livesnap deployment on this broker'
            % exc.__class__.__name__)
        return '/'
    result['notes'].append('RabbitMQ 127.0.0.1:5672, private vhost %s '
                           '(deleted afterwards)' % name)
    return name


def process_deployment(result):
    """Conductor and agent processes on RabbitMQ (a private vhost) and
    PostgreSQL (or SQLite), cleaned up by the janitor; None (and
    ``result['skipped']``) without RabbitMQ.
    """
    from livesnap_tools import fixtures
    if not fixtures.rabbit_available():
        result['skipped'] = 'RabbitMQ at 127.0.0.1:5672 not reachable'
        return None
    vhost = _private_vhost(result)
    transport_url = fixtures.RABBIT_URL + ('' if vhost == '/' else vhost)
    tmp = pathlib.Path(JANITOR.tmpdir())
    if fixtures.postgres_available():
        name = 'livesnap_bench_%s' % uuid.uuid4().hex[:12]
        fixtures.pg_admin('CREATE DATABASE %s' % name)
        JANITOR.push('drop database %s' % name, fixtures.pg_admin,
                     'DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)
        url = 'postgresql+psycopg2://postgres@127.0.0.1:5432/%s' % name
        result['database'] = 'PostgreSQL'
    else:
        url = 'sqlite:///%s' % (tmp / 'livesnap.sqlite')
        result['database'] = 'SQLite'
        result['notes'].append('PostgreSQL at 127.0.0.1:5432 not '
                               'reachable: the conductor used SQLite')
    dep = fixtures.ProcessDeployment(tmp, transport_url, url,
                                     extra=LIMITS_EXTRA)
    JANITOR.push('stop processes', dep.stop)
    return dep


def _run_processes(opts):
    result = {'skipped': None, 'notes': []}
    dep = process_deployment(result)
    if dep is None:
        return result
    tmp = dep.tmp_path
    try:
        dep.start()
        time.sleep(opts.settle)

        def probe(vm):
            time.sleep(opts.settle)
            return {'agent': rss_kib(dep.procs['agent'].pid),
                    'conductor': rss_kib(dep.procs['conductor'].pid),
                    'qemu': rss_kib(vm.pid)}

        result.update(_drive(dep, opts.e2e_n, opts.e2e_data, str(tmp),
                             rss_probe=probe))
    except Exception:
        for proc in ('conductor', 'agent'):
            print('--- %s log ---\n%s' % (proc, dep.log(proc)),
                  file=sys.stderr)
        raise
    finally:
        dep.stop()
    return result


def _e2e_row(transport, what, samples):
    return {'transport': transport, 'op': what, 'n': len(samples),
            'latency_ms': summary([s['latency_ms'] for s in samples]),
            'server_ms': summary([s['server_ms'] for s in samples]),
            'pause_ms': summary([s['pause_ms'] for s in samples])}


def bench_e2e(opts):
    rows = []
    notes = ['latency = POST (or DELETE) sent .. GET /v1/operations/ID '
             'first reads "succeeded" (polled every 10 ms); server = the '
             "operation's updated_at - created_at on the conductor.",
             'delete = the oldest snapshot each time (one child: a merge, '
             'online, of a small layer).']
    inproc = run_inprocess(opts)
    label = 'kombu+memory, 1 process, SQLite'
    rows.append(_e2e_row(label, 'create', inproc['create']))
    rows.append(_e2e_row(label, 'delete', inproc['delete']))
    proc = run_processes(opts)
    if proc['skipped']:
        rows.append({'transport': 'rabbit, processes', 'op': 'create',
                     'skipped': proc['skipped']})
    else:
        label = 'rabbit, 2 processes, %s' % proc['database']
        rows.append(_e2e_row(label, 'create', proc['create']))
        rows.append(_e2e_row(label, 'delete', proc['delete']))
    notes.extend(proc['notes'])
    return {'rows': rows, 'notes': notes}


def bench_memory(opts):
    rows = []
    notes = []
    proc = run_processes(opts)
    if proc['skipped']:
        rows.append({'process': 'agent / conductor',
                     'skipped': proc['skipped']})
    else:
        rss = proc['rss']
        for name in ('agent', 'conductor', 'qemu'):
            rows.append({'process': {'agent': 'livesnap-agent',
                                     'conductor': 'livesnap-conductor',
                                     'qemu': 'QEMU -M none (e2e VM)'}[name],
                         'idle_kib': rss['idle'][name],
                         'after_kib': rss['after'][name]})
        notes.append('after = after %d creates and %d deletes (merges) '
                     'through the API (%s).' % (opts.e2e_n, opts.e2e_n,
                                                proc['database']))
    # A fresh idle -M none QEMU on its own.
    d = JANITOR.tmpdir()
    vm, _ = _start_vm(d, opts.disk_size, 0)
    try:
        time.sleep(opts.settle)
        rows.append({'process': 'QEMU -M none, fresh, %d MiB disk'
                     % (opts.disk_size // MiB),
                     'idle_kib': rss_kib(vm.pid), 'after_kib': None})
    finally:
        vm.kill()
    notes.extend(proc['notes'])
    notes.append('VmRSS from /proc/PID/status.')
    return {'rows': rows, 'notes': notes}


def bench_api(opts):
    from livesnap_tools import bench_api as api
    return api.run(opts)


def bench_pause(opts):
    from livesnap_tools import bench_pause as pause
    return pause.bench_pause(
        opts, lambda d: _start_vm(d, 256 * MiB, 4 * MiB, name='pause'),
        summary, JANITOR.tmpdir)


def bench_ceiling(opts):
    from livesnap_tools import bench_ceiling as ceiling
    return ceiling.run(opts, lambda d: _start_vm(d, 64 * MiB, 0,
                                                 name='ceiling'),
                       _driver, JANITOR.tmpdir)


def bench_load(opts):
    from livesnap_tools import bench_load as load
    return load.run(opts, JANITOR)


def bench_libvirt(opts):
    from livesnap_tools import bench_libvirt as lv
    res = lv.measure(opts.n or (5 if opts.quick else 20))
    for row in res['rows']:
        row.pop('raw', None)
    res['notes'] = [
        'transaction: one snapshotCreateXML (QEMU transaction, vCPUs never '
        'stopped); suspend: suspend, snapshotCreateXML, resume',
        "merge: the flush pause before the dropped layer's deletion and "
        'the pivot of an active commit',
        'python -m livesnap_tools.bench_libvirt prints the same figures']
    return res


BENCHES = {'pause': bench_pause,
           'create': bench_create, 'merge-online': bench_merge_online,
           'merge-offline': bench_merge_offline, 'e2e': bench_e2e,
           'memory': bench_memory, 'api': bench_api,
           'ceiling': bench_ceiling, 'load': bench_load,
           'libvirt': bench_libvirt}


# -- output -----------------------------------------------------------------
def _f(v, digits=1):
    if v is None:
        return '-'
    if isinstance(v, float):
        return '%.*f' % (digits, v)
    return str(v)


def _trio(s, digits=1):
    if not s or s.get('n', 0) == 0:
        return '-'
    return '%s / %s / %s' % (_f(s['p50'], digits), _f(s['p95'], digits),
                             _f(s['max'], digits))


def _table(headers, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    line = lambda r: '  '.join(str(c).ljust(w)  # noqa: E731
                               for c, w in zip(r, widths)).rstrip()
    out = [line(headers), line(['-' * w for w in widths])]
    out.extend(line(r) for r in rows)
    return out


def render(report):
    out = ['livesnap benchmark  %s' % report['date'],
           'machine: %s' % report['machine']['summary'],
           'mode: %s' % report['mode'], '']
    sec = report['sections']
    if 'pause' in sec:
        from livesnap_tools import bench_pause as pause
        out += pause.render(sec['pause'], _table, _trio)
    if 'create' in sec:
        out.append('1. Online create, driver level (ms, p50 / p95 / max)')
        out += _table(['variant', 'n', 'pause_ms', 'stop cmd',
                       'pivot (QMP)', 'overlay create', 'whole create'],
                      [[r['variant'], r['n'], _trio(r['pause_ms'], 2),
                        _trio(r['stop_ms'], 2),
                        _trio(r['pivot_ms'], 2), _trio(r['prepare_ms']),
                        _trio(r['total_ms'])] for r in sec['create']['rows']])
        out += ['  * ' + n for n in sec['create']['notes']] + ['']
    if 'merge-online' in sec:
        out.append('2. Online merge of a snapshot with its live child, '
                   'both ways, by data in the snapshot (ms, p50)')
        out += _table(['data MiB', 'way', 'n', 'total', 'copy', 'MiB/s',
                       'convert MiB/s', 'merge', 'delete',
                       'pause_ms (max)', 'agent pause'],
                      [[r['size_mib'], r.get('direction', 'stream'), r['n'],
                        _f(r['total_ms']['p50']),
                        _f(r['prepare_ms']['p50']), _f(r['copy_mib_s']),
                        _f(r.get('convert_mib_s')),
                        _f(r['merge_ms']['p50']),
                        _f(r['delete_ms']['p50']),
                        '%s (%s)' % (_f(r['pause_ms']['p50'], 2),
                                     _f(r['pause_ms']['max'], 2)),
                        _f((r.get('agent_pause_ms') or {}).get('p50'), 2)]
                       for r in sec['merge-online']['rows']])
        out += ['  * ' + n for n in sec['merge-online']['notes']] + ['']
    if 'merge-offline' in sec:
        out.append('3. Offline merge (qemu-img rebase), by data in the '
                   'snapshot (ms, p50)')
        out += _table(['data MiB', 'n', 'total', 'rebase', 'MiB/s'],
                      [[r['size_mib'], r['n'], _f(r['total_ms']['p50']),
                        _f(r['merge_ms']['p50']), _f(r['copy_mib_s'])]
                       for r in sec['merge-offline']['rows']])
        out += ['  * ' + n for n in sec['merge-offline']['notes']] + ['']
    if 'e2e' in sec:
        out.append('4. End to end through the REST API (ms, p50 / p95 / '
                   'max)')
        rows = []
        for r in sec['e2e']['rows']:
            if r.get('skipped'):
                rows.append([r['transport'], r['op'], '-',
                             'skipped: ' + r['skipped'], '', ''])
            else:
                rows.append([r['transport'], r['op'], r['n'],
                             _trio(r['latency_ms']), _trio(r['server_ms']),
                             _trio(r['pause_ms'], 2)])
        out += _table(['deployment', 'op', 'n', 'latency', 'server',
                       'pause'], rows)
        out += ['  * ' + n for n in sec['e2e']['notes']] + ['']
    if 'memory' in sec:
        out.append('5. Memory (VmRSS, MiB)')
        rows = []
        for r in sec['memory']['rows']:
            if r.get('skipped'):
                rows.append([r['process'], 'skipped: ' + r['skipped'], ''])
            else:
                rows.append([r['process'],
                             _f(r['idle_kib'] / 1024.0
                                if r['idle_kib'] else None),
                             _f(r['after_kib'] / 1024.0
                                if r['after_kib'] else None)])
        out += _table(['process', 'idle', 'after N ops'], rows)
        out += ['  * ' + n for n in sec['memory']['notes']] + ['']
    if 'api' in sec:
        from livesnap_tools import bench_api
        out += bench_api.render(sec['api'])
    if 'ceiling' in sec:
        from livesnap_tools import bench_ceiling
        out += bench_ceiling.render(sec['ceiling'], _table)
    if 'load' in sec:
        from livesnap_tools import bench_load
        out += bench_load.render(sec['load'])
    if 'libvirt' in sec:
        from livesnap_tools import bench_libvirt
        out += bench_libvirt.render(sec['libvirt'], _table, _trio)
    for name, err in report.get('errors', {}).items():
        out.append('%s: FAILED: %s' % (name, err))
    out.append('total run time %.0f s; load average at start %s, at end %s'
               % (report['elapsed_s'], report['machine']['loadavg_start'],
                  report['machine']['loadavg_end']))
    return '\n'.join(out)


def _loadavg():
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return '?'


def machine():
    model = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    model = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open('/proc/meminfo') as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass

    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  timeout=10).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return '?'
    info = {'cpus': os.cpu_count(), 'cpu_model': model, 'mem_mib': mem,
            'kernel': platform.release(), 'python': platform.python_version(),
            'qemu': version(['qemu-system-x86_64', '--version']),
            'qemu_img': version(['qemu-img', '--version'])}
    info['loadavg_start'] = _loadavg()
    info['summary'] = '%s CPUs (%s), %s MiB RAM, Linux %s, %s' % (
        info['cpus'], model, mem, info['kernel'], info['qemu'])
    return info


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog='tools/bench', description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='small N and sizes (about a minute)')
    p.add_argument('--only', action='append', default=[],
                   metavar='NAME', help='run only this section (repeatable, '
                   'or comma-separated): %s; and %s, run only when named'
                   % (', '.join(SECTIONS), ', '.join(OPT_IN_SECTIONS)))
    p.add_argument('--json', action='store_true',
                   help='print the results as JSON instead of the table')
    p.add_argument('-n', type=int, default=None,
                   help='snapshots for the create section (default 30, '
                        'quick 5)')
    p.add_argument('--sizes', default=None,
                   help='merge sizes in MiB, comma-separated (default '
                        '16,64,256; quick 8,32)')
    p.add_argument('--reps', type=int, default=None,
                   help='merges per size (default 3, quick 1)')
    p.add_argument('--no-compare', dest='compare', action='store_false',
                   help='skip the overlay-inside-the-pause comparison')
    p.add_argument('--api-clients', type=int, default=10,
                   help='concurrent clients of the api section (default 10)')
    p.add_argument('--api-seconds', type=float, default=None,
                   help='seconds per request kind in the api section '
                        '(default 10, quick 3)')
    p.add_argument('--verbose', action='store_true',
                   help='show the services\' logs')
    from livesnap_tools import bench_load
    bench_load.add_arguments(p)
    opts = p.parse_args(argv)
    only = [x.strip() for o in opts.only for x in o.split(',') if x.strip()]
    for name in only:
        if name not in SECTIONS + OPT_IN_SECTIONS:
            p.error('unknown section %r (choose from %s)'
                    % (name, ', '.join(SECTIONS + OPT_IN_SECTIONS)))
    opts.sections = ([s for s in SECTIONS if not only or s in only]
                     + [s for s in OPT_IN_SECTIONS if s in only])
    bench_load.finish_options(opts, p.error)
    q = opts.quick
    opts.n = opts.n if opts.n is not None else (5 if q else 30)
    opts.sizes = [int(x) * MiB for x in
                  (opts.sizes or ('8,32' if q else '16,64,256')).split(',')]
    opts.reps = opts.reps if opts.reps is not None else (1 if q else 3)
    opts.disk_size = (256 if q else 1024) * MiB
    if max(opts.sizes) + MiB > opts.disk_size:
        opts.disk_size = max(opts.sizes) * 2
    opts.create_data = (16 if q else 128) * MiB
    opts.e2e_n = 5 if q else 30
    opts.e2e_data = (4 if q else 16) * MiB
    opts.settle = 0.5 if q else 2.0
    if opts.api_seconds is None:
        opts.api_seconds = 3.0 if q else 10.0
    return opts


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    _quiet_logging(opts.verbose)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.monotonic()
    report = {'date': datetime.datetime.now().astimezone().isoformat(
                  timespec='seconds'),
              'machine': machine(),
              'mode': 'quick' if opts.quick else 'default',
              'options': {'n': opts.n, 'sizes_mib': [s // MiB
                                                     for s in opts.sizes],
                          'reps': opts.reps,
                          'disk_mib': opts.disk_size // MiB,
                          'e2e_n': opts.e2e_n},
              'sections': {}, 'errors': {}}
    rc = 0
    try:
        for name in opts.sections:
            print('bench: running %s ...' % name, file=sys.stderr)
            t0 = time.monotonic()
            try:
                report['sections'][name] = BENCHES[name](opts)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                LOG.exception('section %s failed', name)
                report['errors'][name] = '%s: %s' % (
                    exc.__class__.__name__, exc)
                rc = 1
            print('bench: %s done in %.1f s' % (name,
                                                time.monotonic() - t0),
                  file=sys.stderr)
    finally:
        JANITOR.run()
    report['elapsed_s'] = round(time.monotonic() - started, 1)
    report['machine']['loadavg_end'] = _loadavg()
    if opts.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render(report))
    return rc


if __name__ == '__main__':
    sys.exit(main())
