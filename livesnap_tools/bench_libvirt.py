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

from agent import images
from agent.driver import libvirt as lvdriver
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


def run(n):
    reason = libvirtd.why_unavailable()
    if reason:
        raise SystemExit('bench_libvirt: %s' % reason)
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
            rows.append(('create, %s' % mode, _stats(qemu), _stats(agent),
                         stops))
        # Merge every layer away again, from the top: commit (live layer,
        # pivot) while it is the cheaper side, else stream.
        merge_qemu, merge_agent = [], []
        chain = [os.path.join(tmp, '%s-%d.qcow2' % (m, i))
                 for m in lvdriver.PAUSE_MODES for i in range(n)]
        chain = [base] + chain
        while len(chain) > 2:
            snap, parent, child = chain[-2], chain[-3], chain[-1]
            rec = StepRecorder()
            res = drv.merge(disk, lvdriver.image_locator(snap),
                            lvdriver.image_locator(parent), disk, rec,
                            child_is_leaf=True)
            disk = res['disk']
            chain[-2:] = [disk['path']]
            merge_qemu.append(rec.pause_ms)
            merge_agent.append(rec.agent_pause_ms)
        rows.append(('merge (pivot/flush)', _stats(merge_qemu),
                     _stats(merge_agent), '-'))
        print('libvirt %s, %d runs per row; times in ms'
              % (conn.getLibVersion(), n))
        for name, q, a, stops in rows:
            print('%-22s STOP events: %s' % (name, stops))
            print('    pause_ms (qemu)   %s' % q)
            print('    agent_pause_ms    %s' % a)
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)
        libvirtd.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-n', type=int, default=20,
                        help='snapshots per mode (default 20)')
    args = parser.parse_args(argv)
    run(args.n)


if __name__ == '__main__':
    main()
