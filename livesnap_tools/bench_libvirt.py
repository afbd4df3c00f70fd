"""Benchmark the libvirt driver's pause: ``suspend`` against ``transaction``.

Run as root: ``.venv/bin/python -m livesnap_tools.bench_libvirt [-n N]``.  It
starts libvirtd if it does not run (and stops it after), defines a TCG
domain whose images are in a temporary directory, takes ``N`` online
snapshots in each ``[libvirt] snapshot_pause`` mode through
``LibvirtDriver.create_snapshot``, then merges them away (stream and
commit), and prints for each:

- ``qemu``: QEMU's STOP to RESUME window (its own event timestamps, which
  libvirt passes on): how long the vCPUs were stopped (``suspend`` only;
  the ``transaction`` mode never stops them, and the count of STOP events
  seen proves it);
- ``agent``: the agent's window: ``suspend`` sent to ``resume`` returned,
  or, for ``transaction``, the ``snapshotCreateXML`` round trip, an upper
  bound of the I/O drained inside QEMU's transaction.

Figures are recorded in docs/libvirt.md.  No figure is asserted anywhere.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import uuid as uuidlib

from agent.driver.libvirt import driver as lvdriver
from agent import images
from agent.steps import StepRecorder
from livesnap_tools import libvirtd

MiB = 1024 * 1024


def _stats(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return '-'
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return 'p50 %7.2f  p95 %7.2f  max %7.2f  (n=%d)' % (
        statistics.median(values), p95, values[-1], len(values))


def _summary(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return {'p50': statistics.median(values), 'p95': p95,
            'max': values[-1], 'n': len(values)}


def measure(n):
    """Take the figures; :returns: ``{"libvirt", "n", "rows": [{"name",
    "stops", "qemu_ms", "agent_ms"}]}`` (``*_ms``: p50/p95/max/n or None).

    :raises RuntimeError: libvirt cannot be used here (the reason).
    """
    reason = libvirtd.why_unavailable()
    if reason:
        raise RuntimeError(reason)
    import libvirt
    libvirtd.ensure_running()
    tmp = tempfile.mkdtemp(prefix='ls-bench-libvirt-')
    conn = libvirt.open(libvirtd.URI)
    dom = None
    try:
        base = os.path.join(tmp, 'base.qcow2')
        images.create_base(base, 64 * MiB)
        uuid = str(uuidlib.uuid4())
        dom = conn.createXML(libvirtd.domain_xml(
            'ls-bench-%s' % uuid[:8], uuid, [('vda', base)]), 0)
        drv = lvdriver.LibvirtDriver([tmp], uri=libvirtd.URI,
                                     snapshot_pause='transaction')
        disk = lvdriver.disk_locator(uuid, 'vda', base)
        rows = []
        for mode in lvdriver.PAUSE_MODES:
            drv.snapshot_pause = mode
            qemu, agent, stops = [], [], 0
            for i in range(n):
                rec = StepRecorder()
                drv._clock.mark(uuid)
                disk = drv.create_snapshot(disk, '%s-%d' % (mode, i),
                                           rec)['disk']
                with drv._clock._cond:
                    stops += sum(1 for e, _ in drv._clock._events.get(
                        uuid, []) if e == 'STOP')
                detail = rec.steps[-1].get('detail', {})
                qemu.append(detail.get('qemu_pause_ms'))
                agent.append(rec.agent_pause_ms)
            rows.append({'name': 'create, %s' % mode,
                         'qemu_ms': _summary(qemu),
                         'agent_ms': _summary(agent), 'stops': stops,
                         'raw': (qemu, agent)})
        # Merge every layer away again, from the top: commit (live layer,
        # pivot) while it is the cheaper side, else stream.
        merge_qemu, merge_agent = [], []
        chain = [os.path.join(tmp, '%s-%d.qcow2' % (m, i))
                 for m in lvdriver.PAUSE_MODES for i in range(n)]
        chain = [base] + chain
        while len(chain) > 2:
            snap, parent = chain[-2], chain[-3]
            rec = StepRecorder()
            res = drv.merge(disk, lvdriver.image_locator(snap),
                            lvdriver.image_locator(parent), disk, rec,
                            child_is_leaf=True)
            disk = res['disk']
            chain[-2:] = [disk['path']]
            merge_qemu.append(rec.pause_ms)
            merge_agent.append(rec.agent_pause_ms)
        rows.append({'name': 'merge (pivot/flush)',
                     'qemu_ms': _summary(merge_qemu),
                     'agent_ms': _summary(merge_agent), 'stops': None,
                     'raw': (merge_qemu, merge_agent)})
        return {'libvirt': conn.getLibVersion(), 'n': n, 'rows': rows}
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)
        libvirtd.stop()


def run(n):
    """Measure and print the figures (the command line)."""
    try:
        res = measure(n)
    except RuntimeError as exc:
        raise SystemExit('bench_libvirt: %s' % exc)
    print('libvirt %s, %d runs per row; times in ms' % (res['libvirt'], n))
    for row in res['rows']:
        qemu, agent = row['raw']
        print('%-22s STOP events: %s' % (row['name'], row['stops']
                                         if row['stops'] is not None
                                         else '-'))
        print('    pause_ms (qemu)   %s' % _stats(qemu))
        print('    agent_pause_ms    %s' % _stats(agent))


def render(sec, table, trio):
    """The ``libvirt`` section of ``tools/bench`` as text lines."""
    out = ['L. libvirt driver, TCG domain, libvirt %s: pause per '
           '[libvirt] snapshot_pause (ms, p50 / p95 / max)'
           % sec.get('libvirt')]
    out += table(['operation', 'n', 'vCPUs stopped (QEMU clock)',
                  "agent's window", 'STOP events'],
                 [[r['name'], (r['agent_ms'] or {}).get('n', 0),
                   trio(r['qemu_ms'], 2) if r['qemu_ms'] else 'never',
                   trio(r['agent_ms'], 2),
                   '-' if r['stops'] is None else r['stops']]
                  for r in sec['rows']])
    out += ['  * ' + n for n in sec.get('notes', [])] + ['']
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-n', type=int, default=20,
                        help='snapshots per mode (default 20)')
    args = parser.parse_args(argv)
    run(args.n)


if __name__ == '__main__':
    main()
