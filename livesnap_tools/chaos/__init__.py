"""``tools/chaos``: livesnap under load while things break, then checked.

One run builds the load benchmark's production shape on this machine
(:mod:`livesnap_tools.bench_load`): ``--agents`` ``livesnap-agent`` processes
(one host each), ``--vms`` ``-M none`` QEMU VMs with a second QMP monitor
the run keeps, ``--conductors`` ``livesnap-conductor`` processes sharing
one database, ``--tenants`` projects -- but on a *private* RabbitMQ node
and a *private* PostgreSQL cluster (free ports, temporary directories), so
both can be restarted, and with the first host's image directory on a
small tmpfs of its own.

For ``--duration`` seconds every VM's tenant writes a sequence-stamped
pattern into its disk, snapshots it, and deletes the oldest snapshot
(merge) once it has ``--depth`` (:mod:`.tenants`); meanwhile a fault
injector (:mod:`.faults`, seeded by ``--seed``) kills agents and
conductors with SIGKILL, restarts the broker and the database, kills a
QEMU in the middle of a merge, fills the small image directory, stalls a
QEMU (SIGSTOP), sends tasks twice and loses tasks on their way to the
agent.  Then it stops injecting, waits (at
most ``--settle`` seconds) for every disk to be free, and checks
(:mod:`.checks`): no VM paused, no operation pending or running, every
disk free, the audit finds no drift, every image passes ``qemu-img
check``, every layer holds exactly what was written before it, nothing a
tenant saw succeed was lost.  It prints a table (faults per kind,
operations by outcome and error, the longest pause on QEMU's clock, the
time from the last fault until every disk was free, the invariants with
PASS/FAIL) and exits non-zero if any invariant fails.

Everything it started (processes, VMs, mount, broker node, database
cluster, files) is removed at the end, also on Ctrl-C or SIGTERM.
"""

import argparse
import json
import logging
import signal
import sys
import time

from livesnap_tools import bench as _bench
from livesnap_tools.chaos import faults

DEFAULTS = {'agents': 6, 'vms': 12, 'tenants': 6, 'conductors': 2,
            'duration': 300.0}
QUICK = {'agents': 4, 'vms': 8, 'tenants': 4, 'conductors': 2,
         'duration': 75.0}


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog='tools/chaos', description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true',
                   help='a shorter, smaller run (%(agents)d agents, %(vms)d '
                        'VMs, %(duration)d s)' % QUICK)
    for key, what in (('agents', 'agent processes, one host each'),
                      ('vms', 'QEMU VMs'), ('tenants', 'tenant projects'),
                      ('conductors', 'conductor processes')):
        p.add_argument('--' + key, type=int, default=None,
                       help='%s (default %d)' % (what, DEFAULTS[key]))
    p.add_argument('--duration', type=float, default=None,
                   help='seconds of load and faults (default %d, quick %d)'
                        % (DEFAULTS['duration'], QUICK['duration']))
    p.add_argument('--seed', type=int, default=None,
                   help='seed of the fault injector (default: from the '
                        'clock; printed)')
    p.add_argument('--driver', choices=('qemu', 'libvirt'), default='qemu',
                   help='the agents\' driver: QEMU VMs (default) or '
                        'libvirt domains (TCG, on this machine\'s libvirtd)')
    p.add_argument('--kinds', default=None,
                   help='faults to inject, comma-separated (default all: '
                        '%s; %s with --driver libvirt only)' % (
                            ', '.join(sorted(faults.KINDS)),
                            ', '.join(faults.LIBVIRT_ONLY)))
    p.add_argument('--gap-min', type=float, default=0.5,
                   help='least seconds between two faults (default 0.5)')
    p.add_argument('--gap-max', type=float, default=2.5,
                   help='most seconds between two faults (default 2.5)')
    p.add_argument('--depth', type=int, default=3,
                   help='snapshots a tenant keeps on a VM before deleting '
                        'the oldest (default 3)')
    p.add_argument('--settle', type=float, default=180.0,
                   help='most seconds to wait after the faults for every '
                        'disk to be free (default 180)')
    p.add_argument('--poll-interval', type=float, default=0.1,
                   help='seconds between a tenant\'s GETs (default 0.1)')
    p.add_argument('--disk-mib', type=int, default=32,
                   help='virtual size of each VM disk (default 32)')
    p.add_argument('--small-disk-mib', type=int, default=128,
                   help='size of the tmpfs holding the first host\'s '
                        'images (default 128: the agent keeps 64 MiB in '
                        'reserve by default)')
    p.add_argument('--keep-logs', metavar='DIR', default=None,
                   help='copy the processes\' logs and configuration '
                        'files to DIR before cleaning up')
    p.add_argument('--json', action='store_true',
                   help='print the result as JSON instead of a table')
    p.add_argument('-v', '--verbose', action='store_true')
    opts = p.parse_args(argv)
    base = QUICK if opts.quick else DEFAULTS
    for key, val in base.items():
        if getattr(opts, key) is None:
            setattr(opts, key, val)
    if opts.seed is None:
        opts.seed = int(time.time() * 1000) % 1000000
    if opts.kinds is None:
        opts.kinds = ','.join(sorted(
            k for k in faults.KINDS if opts.driver == 'libvirt'
            or k not in faults.LIBVIRT_ONLY))
    opts.kinds = [k for k in opts.kinds.split(',') if k]
    unknown = set(opts.kinds) - set(faults.KINDS)
    if unknown:
        p.error('unknown fault kinds: %s' % ', '.join(sorted(unknown)))
    if opts.driver != 'libvirt' and set(opts.kinds) & set(
            faults.LIBVIRT_ONLY):
        p.error('%s: only with --driver libvirt'
                % ', '.join(faults.LIBVIRT_ONLY))
    if min(opts.agents, opts.vms, opts.tenants, opts.conductors,
           opts.depth) < 1 or opts.tenants > opts.vms:
        p.error('--agents, --vms, --tenants, --conductors, --depth must be '
                '>= 1 and --tenants <= --vms')
    if opts.gap_min < 0 or opts.gap_max < opts.gap_min:
        p.error('need 0 <= --gap-min <= --gap-max')
    return opts


# -- output ----------------------------------------------------------------
def render(res):
    out = ['livesnap chaos run, seed %d' % res['seed']]
    sh = res['shape']
    out.append('  %s driver' % sh.get('driver', 'qemu'))
    out.append('  %d agents, %d VMs, %d tenants, %d conductors, %g s of '
               'faults every %g-%g s, depth %d; set-up %s s'
               % (sh['agents'], sh['vms'], sh['tenants'], sh['conductors'],
                  sh['duration'], sh['gap_min'], sh['gap_max'], sh['depth'],
                  res['setup_s']))
    out.append('')
    rows = [[k, str(n), str(res['faults_skipped'].get(k, 0))]
            for k, n in sorted(res['faults'].items())]
    rows.append(['total', str(sum(res['faults'].values())),
                 str(sum(res['faults_skipped'].values()))])
    out += _bench._table(['fault', 'injected', 'skipped (no target)'], rows)
    out.append('')
    rows = []
    for action, row in sorted(res['operations'].items()):
        failed = sum(row['failed'].values())
        rows.append([action, str(row['started']), str(row['succeeded']),
                     str(failed), ', '.join(
                         '%s %d' % (c, n)
                         for c, n in row['failed'].most_common()) or '-',
                     ', '.join('%s %d' % kv for kv in row['other'].items())
                     or '-'])
    out += _bench._table(['operation', 'started', 'succeeded', 'failed',
                          'failed by error', 'not ended'], rows)
    for action, row in sorted(res['operations'].items()):
        for code, sample in sorted(row.get('samples', {}).items()):
            out.append('  %s failed, %s, e.g.: %s' % (action, code, sample))
    out.append('')
    if res['refusals']:
        out.append('  requests refused or lost (tenants\' side):')
        for what, n in res['refusals'].most_common(10):
            out.append('    %5d  %s' % (n, what))
        out.append('')
    free = res['disks_free_after_s']
    out += _bench._table(['figure', 'value'], [
        ['longest VM pause, QEMU STOP..RESUME (ms)',
         '%s (%s)' % (res['longest_pause_ms'], res['pause_vm'] or '-')],
        ['last fault -> every disk free (s)',
         '%s' % free if free is not None
         else 'NOT within %d s' % res['settle_bound_s']],
        ['QEMUs killed mid-operation', str(len(res['qemu_killed']))],
        ['tasks lost on the way to their agent',
         str(len(res.get('lost_tasks', ())))],
        ['tenant-side errors (writes, exceptions)',
         str(res['worker_errors'])],
    ])
    out.append('')
    rows = [[name, 'PASS' if ok else 'FAIL'] for name, ok, _ in
            res['checks']]
    out += _bench._table(['invariant', 'result'], rows)
    for name, ok, details in res['checks']:
        if details:
            out.append('  %s %s:' % ('FAIL' if not ok else 'note', name))
            for d in details[:12]:
                out.append('    - %s' % d)
            if len(details) > 12:
                out.append('    - ... %d more' % (len(details) - 12))
    for err in res['fault_errors'][:8]:
        out.append('  fault error: %s' % err[:300])
    for err in res['boot_errors']:
        out.append('  note: %s' % err)
    for err in res['worker_error_samples']:
        out.append('  tenant error sample: %s' % err)
    return '\n'.join(out)


def failed(res):
    return [name for name, ok, _ in res['checks'] if not ok]


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if opts.verbose
                        else logging.WARNING,
                        format='%(asctime)s %(levelname)s %(name)s '
                               '%(message)s')
    signal.signal(signal.SIGTERM, _bench._sigterm)
    janitor = _bench.Janitor()
    from livesnap_tools.chaos import run
    try:
        res = run.run(opts, janitor)
    finally:
        print('chaos: cleaning up', file=sys.stderr)
        janitor.run()
    if opts.json:
        print(json.dumps(res, indent=2, sort_keys=True, default=str))
    else:
        print(render(res))
    bad = failed(res)
    if bad:
        print('chaos: FAIL: %s' % '; '.join(bad), file=sys.stderr)
        return 1
    return 0
