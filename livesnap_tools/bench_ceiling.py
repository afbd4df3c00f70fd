"""What one operation costs QEMU and the driver alone (``--only ceiling``).

The load section's clients make, on every VM, ``--depth`` snapshots (each
after writing ``--write-kib`` of guest data) and then delete them oldest
first, each a merge.  This section makes the same cycle on one ``-M
none`` VM through the QEMU driver, in this process, with no conductor, no
agent, no bus and no database, and counts the CPU time (user + system) of
QEMU and of this process per operation.  QEMU's figure is the least any
deployment of the method spends per operation on this machine, so
``CPUs x 1000 / QEMU ms`` is the most operations per second its cores
could do if the control plane cost nothing.
"""

import os
import resource
import time

MiB = 1024 * 1024


def _cpu_s(pid):
    """utime + stime of process ``pid`` in seconds."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _own_cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Meter(object):
    """CPU seconds of QEMU and of this process, summed per kind of work."""

    def __init__(self, pid):
        self.pid = pid
        self.qemu = {}
        self.own = {}
        self.n = {}

    def measure(self, kind, func, *args, **kwargs):
        q0, p0 = _cpu_s(self.pid), _own_cpu_s()
        result = func(*args, **kwargs)
        self.qemu[kind] = self.qemu.get(kind, 0.0) + _cpu_s(self.pid) - q0
        self.own[kind] = self.own.get(kind, 0.0) + _own_cpu_s() - p0
        self.n[kind] = self.n.get(kind, 0) + 1
        return result

    def per_op_ms(self, kind, of):
        n = self.n.get(kind, 0)
        return round(1000.0 * of.get(kind, 0.0) / n, 2) if n else None


def run(opts, start_vm, make_driver, tmpdir):
    """Run ``cycles`` create/delete cycles on one VM.

    :param start_vm: callable(directory) -> (VM, base image path).
    :param make_driver: callable(directory) -> the QEMU driver.
    """
    from agent import steps
    depth = opts.depth
    cycles = 3 if opts.quick else 10
    write = opts.write_kib * 1024
    d = tmpdir()
    vm, base = start_vm(d)
    driver = make_driver(d)
    disk = {'driver': driver.name, 'qmp_socket': vm.qmp_socket,
            'path': base}
    meter = _Meter(vm.pid)
    k = 0
    started = time.monotonic()
    try:
        for _ in range(cycles):
            # The snapshots, oldest first, then the live layer (which
            # keeps its path on the drivers that keep it, issue 20).
            snaps = []
            for _ in range(depth):
                if write:
                    meter.measure('write', vm.write, k & 0xff,
                                  (k % 32) * MiB, write)
                res = meter.measure('create', driver.create_snapshot, disk,
                                    'layer-%05d' % k, steps.StepRecorder())
                k += 1
                disk = res['disk']
                snaps.append(res['snapshot']['path'])
            chain = snaps + [disk['path']]
            # Oldest first, as the load section's tenants delete: each has
            # one child, so each is a merge; the first has no parent.
            while len(chain) > 1:
                snap, child = chain[0], chain[1]
                live = child == disk['path']
                res = meter.measure(
                    'merge', driver.merge, disk, driver.image(snap), None,
                    disk if live else driver.image(child),
                    steps.StepRecorder(), child_is_leaf=live)
                if not res['online']:
                    raise RuntimeError('merge did not run online')
                if live:
                    disk = res['disk']
                chain = [res['child']['path']] + chain[2:]
        if vm.status() != 'running':
            raise RuntimeError('VM not running after the cycles')
    finally:
        vm.kill()
    elapsed = time.monotonic() - started
    rows = []
    for kind in ('create', 'merge', 'write'):
        if meter.n.get(kind):
            rows.append({'kind': kind, 'n': meter.n[kind],
                         'qemu_ms': meter.per_op_ms(kind, meter.qemu),
                         'driver_ms': meter.per_op_ms(kind, meter.own)})
    ops = meter.n['create'] + meter.n['merge']
    qemu_op = 1000.0 * (meter.qemu['create'] + meter.qemu['merge']) / ops
    guest_op = 1000.0 * meter.qemu.get('write', 0.0) / ops
    driver_op = 1000.0 * (meter.own['create'] + meter.own['merge']) / ops
    cpus = os.cpu_count() or 1
    return {
        'rows': rows, 'cpus': cpus, 'ops': ops,
        'elapsed_s': round(elapsed, 1),
        'qemu_ms_per_op': round(qemu_op, 2),
        'guest_ms_per_op': round(guest_op, 2),
        'driver_ms_per_op': round(driver_op, 2),
        'ceiling_qemu': round(cpus * 1000.0 / qemu_op, 1),
        'ceiling_qemu_guest': round(cpus * 1000.0 / (qemu_op + guest_op),
                                    1),
        'ceiling_qemu_driver': round(
            cpus * 1000.0 / (qemu_op + guest_op + driver_op), 1),
        'notes': [
            '%d cycles on one -M none VM (64 MiB qcow2): %d creates, each '
            'after %d KiB of guest data, then %d deletes oldest first, '
            'each a merge online, through the QEMU driver in this process '
            '(no agent, conductor, bus or database)'
            % (cycles, depth, opts.write_kib, depth),
            'CPU = utime + stime from /proc (QEMU) and getrusage (this '
            'process: the driver, its QMP client, the in-process overlay)',
            'per operation = over creates and merges together, as the load '
            'section counts; guest writes = the load clients\' data, '
            'written by QEMU',
        ],
    }


def render(sec, table):
    out = ['8. One operation\'s CPU in QEMU and the driver alone, and the '
           'ceiling it sets (ms of CPU per operation)']
    out += table(['work', 'n', 'QEMU', 'driver (this process)'],
                 [[r['kind'], r['n'], '%.2f' % r['qemu_ms'],
                   '%.2f' % r['driver_ms']] for r in sec['rows']])
    out.append('')
    out += table(['per operation (creates and merges)', 'ms', 'ceiling '
                  'op/s on %d CPUs' % sec['cpus']], [
        ['QEMU', '%.2f' % sec['qemu_ms_per_op'], '%.0f'
         % sec['ceiling_qemu']],
        ['+ the guest data QEMU writes', '%.2f' % sec['guest_ms_per_op'],
         '%.0f' % sec['ceiling_qemu_guest']],
        ['+ the driver', '%.2f' % sec['driver_ms_per_op'],
         '%.0f' % sec['ceiling_qemu_driver']]])
    out += ['  * ' + n for n in sec['notes']] + ['']
    return out
