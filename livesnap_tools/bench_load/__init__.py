"""``tools/bench --only load``: livesnap under load, in the production shape.

One run builds, on this machine:

* a RabbitMQ vhost and a PostgreSQL database of its own;
* ``--agents`` ``livesnap-agent`` processes, each its own hypervisor host
  (``[agent] host`` hv01, hv02, ..., own image and journal directories);
* ``--vms`` ``-M none`` QEMU VMs spread over the hosts, each with a second
  QMP monitor the benchmark keeps (:mod:`.monitor`), registered as servers
  of ``--tenants`` projects (consecutive VMs share a tenant);
* ``livesnap-conductor`` processes sharing the database: one, then two
  (``--conductors 1,2``), each phase with the tenants spread over them;

then, per phase, a bare ``stop``+``cont`` on every VM (the floor of a
pause, on QEMU's clock), and ``--duration`` seconds of every VM's tenant
looping create, wait, create... then deleting (merging) them
(:mod:`.tenants`).  Limits are raised (``[api] operations_per_minute = 0``,
no quota, no chain-depth limit, ``host_down_time`` 120 s); everything else
is the default configuration.

Rates, latencies, pauses and CPU are taken over the measuring window (the
phase's start to its deadline): operations that ended in it, requests
answered in it, CPU used in it.  After the deadline the tenants only finish
the deletes of the cycle they are in; those are not counted.

With ``--hosts N`` the agents run on a host bed (``livesnap_tools/hostbed.py``,
root only): N network namespaces, one agent and its VMs and image directory
in each, and a private RabbitMQ and PostgreSQL on the bed's bridge that the
agents reach over their veths and the conductors (in the root namespace)
over the bridge address; the machine's shared services are not used.

Everything (processes, VMs, vhost, database, the bed, files) is undone by
the benchmark's janitor, also on an error, Ctrl-C or SIGTERM.
"""

import collections
import os
import sys
import threading
import time
import uuid

from livesnap_tools import bench as _bench
from livesnap_tools.bench_load import cluster as cluster_mod
from livesnap_tools.bench_load import monitor as monitor_mod
from livesnap_tools.bench_load import procstat
from livesnap_tools.bench_load import tenants as tenants_mod

MiB = 1024 * 1024

#: the issue's shape (default) and the one-minute variant (--quick)
DEFAULTS = {'agents': 20, 'vms': 40, 'tenants': 20, 'duration': 60.0,
            'depth': 4, 'baseline_n': 20}
QUICK = {'agents': 20, 'vms': 40, 'tenants': 20, 'duration': 10.0,
         'depth': 2, 'baseline_n': 5}

#: where the run's database and broker are: PostgreSQL's address, port and
#: database name, and the RabbitMQ pids to charge (None: every beam.smp)
Services = collections.namedtuple('Services', 'pg_host pg_port dbname '
                                              'rabbit_pids')

LIMITS = ('[api]\noperations_per_minute = 0\n'
          '[conductor]\nmax_chain_depth = 0\nsnapshot_quota = -1\n'
          'host_down_time = 120\n')


def add_arguments(parser):
    """The load section's options, on ``tools/bench``'s parser."""
    g = parser.add_argument_group('load section (--only load)')
    g.add_argument('--agents', type=int, default=None,
                   help='agent processes, one host each (default %d)'
                        % DEFAULTS['agents'])
    g.add_argument('--hosts', type=int, default=0,
                   help='run the agents on a host bed of this many network '
                        'namespaces, one agent (and its VMs) in each, with '
                        'a private RabbitMQ and PostgreSQL reached over the '
                        'namespaces\' network (root only; sets --agents; '
                        'see docs/hosts.md); 0: all on the loopback with '
                        'the shared services (default)')
    g.add_argument('--vms', type=int, default=None,
                   help='QEMU VMs spread over the hosts (default %d)'
                        % DEFAULTS['vms'])
    g.add_argument('--tenants', type=int, default=None,
                   help='tenant projects; consecutive VMs share one '
                        '(default %d)' % DEFAULTS['tenants'])
    g.add_argument('--duration', type=float, default=None,
                   help='seconds of load per phase (default %d, quick %d)'
                        % (DEFAULTS['duration'], QUICK['duration']))
    g.add_argument('--conductors', default='1,2',
                   help='conductor processes per phase, increasing '
                        '(default 1,2)')
    g.add_argument('--depth', type=int, default=None,
                   help='snapshots a tenant makes on a VM before deleting '
                        'them (default %d, quick %d)'
                        % (DEFAULTS['depth'], QUICK['depth']))
    g.add_argument('--poll-interval', type=float, default=0.02,
                   help='seconds between a tenant\'s GETs of its operation '
                        '(default 0.02)')
    g.add_argument('--rate', type=float, default=0.0,
                   help='operations per second offered by all the tenants '
                        'together, each VM\'s operations evenly spaced '
                        '(a VM behind its schedule goes on at once); 0: '
                        'each VM starts its next operation as soon as the '
                        'last one ended (default)')
    g.add_argument('--write-kib', type=int, default=64,
                   help='guest data written into the live layer before '
                        'each create, KiB (default 64; 0: none)')
    g.add_argument('--nice', type=int, default=0,
                   help='niceness of the livesnap processes (conductors and '
                        'agents), e.g. 10 to run them below the VMs as a '
                        'hypervisor host would (default 0)')
    g.add_argument('--baseline-n', type=int, default=None,
                   help='bare stop+cont pairs per VM before each phase '
                        '(default %d, quick %d)'
                        % (DEFAULTS['baseline_n'], QUICK['baseline_n']))


def finish_options(opts, error):
    """Fill the load options' defaults; ``error(msg)`` on a bad value."""
    base = QUICK if opts.quick else DEFAULTS
    if opts.hosts < 0:
        error('--hosts must be >= 0')
    if opts.hosts:
        if opts.agents is not None and opts.agents != opts.hosts:
            error('--hosts runs one agent per host: --agents must be left '
                  'out or equal --hosts')
        opts.agents = opts.hosts
    for key in base:
        if getattr(opts, key, None) is None:
            setattr(opts, key, base[key])
    try:
        opts.conductor_counts = [int(x) for x in
                                 str(opts.conductors).split(',') if x]
    except ValueError:
        error('--conductors takes numbers, e.g. 1,2')
    counts = opts.conductor_counts
    if not counts or counts[0] < 1 or counts != sorted(set(counts)):
        error('--conductors must be increasing numbers >= 1, e.g. 1,2')
    if min(opts.agents, opts.vms, opts.tenants, opts.depth) < 1:
        error('--agents, --vms, --tenants and --depth must be >= 1')
    if opts.tenants > opts.vms:
        error('--tenants cannot exceed --vms (a tenant owns VMs)')
    if opts.duration <= 0:
        error('--duration must be > 0')
    if opts.rate < 0:
        error('--rate must be >= 0')


# -- one run ---------------------------------------------------------------
def run(opts, janitor):
    """The load section: returns its result dict (see :func:`render`)."""
    from livesnap_tools import fixtures
    result = {'skipped': None, 'phases': [], 'notes': [], 'vm_status': {}}
    root = janitor.tmpdir('lsl-')
    disk_size = 64 * MiB
    if opts.hosts:
        backing = _start_bed(opts, janitor, root, result)
    else:
        backing = _shared_services(janitor, result)
    if backing is None:
        return result
    services, transport_url, database_url = backing
    result.update(state_dir=root)
    print('bench: load uses RabbitMQ %s, PostgreSQL database %s, '
          'directory %s' % (transport_url, database_url, root),
          file=sys.stderr)
    cl = cluster_mod.Cluster(
        root, transport_url, database_url, opts.agents, opts.vms,
        opts.tenants, disk_size, extra=LIMITS, nice=opts.nice,
        host_names=result.get('host_names'), netns=bool(opts.hosts))
    janitor.push('stop the load cluster', cl.stop)
    observer = monitor_mod.Observer()
    janitor.push('close the QMP observer', observer.close)
    result['shape'] = {
        'agents': opts.agents, 'vms': opts.vms, 'tenants': opts.tenants,
        'duration_s': opts.duration, 'depth': opts.depth,
        'poll_interval_s': opts.poll_interval,
        'write_kib': opts.write_kib, 'baseline_n': opts.baseline_n,
        'nice': opts.nice, 'rate': opts.rate, 'hosts': opts.hosts,
        'conductors': opts.conductor_counts}
    try:
        t0 = time.monotonic()
        cl.start_conductor(fixtures.free_port())
        cl.start_agents(heartbeat_interval=2.0)
        cl.start_vms()
        for spec in cl.vms:
            observer.connect(spec['name'], spec['monitor_socket'])
        cl.wait_hosts_up()
        cl.register_servers()
        result['setup_s'] = round(time.monotonic() - t0, 1)
        for n in opts.conductor_counts:
            while len(cl.conductor_urls) < n:
                cl.start_conductor(fixtures.free_port())
            result['phases'].append(
                _phase(opts, cl, observer, services, disk_size))
        for spec in cl.vms:
            result['vm_status'][spec['name']] = observer.status(
                spec['name'])
    except Exception:
        for name in cl.dead() or sorted(cl.procs)[:2]:
            print('--- %s log (tail) ---\n%s' % (name, cl.log(name)),
                  file=sys.stderr)
        raise
    finally:
        observer.close()
        cl.stop()
    paused = sorted(n for n, s in result['vm_status'].items()
                    if s != 'running')
    if paused:
        result['notes'].append('VMs NOT running at the end: %s'
                               % ', '.join(paused))
    return result


def _shared_services(janitor, result):
    """A vhost of the shared RabbitMQ and a database of the shared
    PostgreSQL (both on 127.0.0.1), removed by the janitor.  Returns
    ``(Services, transport_url, database_url)``, or None (and
    ``result['skipped']`` set) if they are not reachable.
    """
    from livesnap_tools import fixtures
    missing = [what for what, ok in (
        ('RabbitMQ at 127.0.0.1:5672', fixtures.rabbit_available()),
        ('PostgreSQL at 127.0.0.1:5432', fixtures.postgres_available()))
        if not ok]
    if missing:
        result['skipped'] = '%s not reachable' % ' and '.join(missing)
        return None
    vhost = fixtures.rabbit_add_vhost()
    janitor.push('delete vhost %s' % vhost, fixtures.rabbit_delete_vhost,
                 vhost)
    dbname = 'livesnap_load_%s' % uuid.uuid4().hex[:12]
    fixtures.pg_admin('CREATE DATABASE %s' % dbname)
    janitor.push('drop database %s' % dbname, fixtures.pg_admin,
                 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % dbname)
    result.update(vhost=vhost, database=dbname)
    return (Services('127.0.0.1', 5432, dbname, None),
            fixtures.RABBIT_URL + vhost,
            'postgresql+psycopg2://postgres@127.0.0.1:5432/%s' % dbname)


def bed_host_names(tag, n):
    """The hosts (and namespaces) of a load run's bed: ``TAG-hv01`` ..."""
    return ['%s-hv%02d' % (tag, i + 1) for i in range(n)]


def _start_bed(opts, janitor, root, result):
    """The network and services of a host bed of ``opts.hosts`` hosts
    (its agents and VMs are the cluster's), removed by the janitor.
    Returns ``(Services, transport_url, database_url)``, or None (and
    ``result['skipped']`` set) if the bed cannot run here.
    """
    from livesnap_tools import hostbed
    why = hostbed.unavailable()
    if why:
        result['skipped'] = 'host bed unavailable: %s' % why
        return None
    tag = 'l' + uuid.uuid4().hex[:5]
    names = bed_host_names(tag, opts.hosts)
    bed = hostbed.HostBed(os.path.join(root, 'bed'), hosts=opts.hosts,
                          tag=tag, host_names=names)
    janitor.push('remove the host bed %s' % tag, bed.stop)
    bed.make_network()
    bed.start_services()
    result.update(host_names=names, bridge=bed.bridge,
                  bed_address=bed.address, database=bed.database_url,
                  vhost=None)
    return (Services(bed.pg.host, bed.pg.port, 'livesnap',
                     lambda: _pidfile_pids(bed.rabbit.pidfile)),
            bed.rabbit.url, bed.database_url)


def _pidfile_pids(path):
    """``[pid]`` read from ``path`` (``[]`` if unreadable)."""
    try:
        with open(path) as f:
            return [int(f.read().strip())]
    except (OSError, ValueError):
        return []


def _pg_backends(services):
    """Pids of the PostgreSQL backends serving the run's database (not
    ours).
    """
    import psycopg2
    dbname = services.dbname
    try:
        conn = psycopg2.connect(host=services.pg_host,
                                port=services.pg_port, user='postgres',
                                dbname=dbname)
    except psycopg2.Error:
        return []
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT pid FROM pg_stat_activity WHERE datname = %s '
                        'AND pid <> pg_backend_pid()', (dbname,))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def _kinds(cl, services):
    kinds = cl.pids()
    kinds['postgres'] = _pg_backends(services)
    kinds['rabbitmq'] = (services.rabbit_pids() if services.rabbit_pids
                         else procstat.pids_by_comm('beam.smp'))
    kinds['clients'] = [os.getpid()]
    return kinds


def _phase(opts, cl, observer, services, disk_size):
    """Baseline, then ``opts.duration`` s of load with the conductors
    running now.  Returns the phase's figures.
    """
    names = [s['name'] for s in cl.vms]
    bare = observer.bare_pauses(names, opts.baseline_n)
    n_cond = len(cl.conductor_urls)
    start = time.time()
    deadline = start + opts.duration
    workers = [tenants_mod.Worker(
        spec, cl.conductor_urls[i % n_cond], deadline, opts.depth,
        opts.poll_interval, write=observer.write,
        write_bytes=opts.write_kib * 1024, disk_size=disk_size,
        interval=len(cl.vms) / opts.rate if opts.rate > 0 else 0.0)
        for i, spec in enumerate(cl.vms)]
    kinds = _kinds(cl, services)
    before = procstat.sample(kinds)
    threads = [threading.Thread(target=w.run, name='tenant-' + w.name,
                                daemon=True) for w in workers]
    try:
        for t in threads:
            t.start()
        while time.time() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.time())))
            if cl.dead():
                raise RuntimeError('processes exited during the load: %s'
                                   % ', '.join(cl.dead()))
        requests = sum(w.client.requests for w in workers)
        conn_errors = sum(w.client.conn_errors for w in workers)
        kinds_end = _kinds(cl, services)
        after = procstat.sample(kinds_end)
        for t in threads:
            t.join(tenants_mod.OP_TIMEOUT * (opts.depth + 1))
    finally:
        for w in workers:
            w.stop_now = True
    drained = time.time()
    cpu = procstat.delta(before, after)
    rss = procstat.peak_rss(kinds_end)
    records = [r for w in workers for r in w.records]
    for r in records:
        wins = observer.windows(r['vm'], r['t_post'], r['t_done'])
        r['qemu_events_ms'] = (sum((e - s) * 1000.0 for s, e in wins)
                               if wins else None)
    in_window = [r for r in records if r['t_done'] <= deadline]
    failures = [f for w in workers for f in w.failures]
    ok = [r for r in in_window if r['status'] == 'succeeded']
    creates = [r for r in ok if r['action'] == 'create']
    deletes = [r for r in ok if r['action'] == 'delete']
    merges = [r for r in deletes if r['mode'] == 'merge']
    errors = {}
    for f in failures:
        key = '%s: %s' % (f['action'], f['error'][:160])
        errors[key] = errors.get(key, 0) + 1
    n_ok = len(ok)

    def stats(values):
        vals = [v for v in values if v is not None]
        return {'n': len(vals),
                'p50': _bench.percentile(vals, 50),
                'p95': _bench.percentile(vals, 95),
                'p99': _bench.percentile(vals, 99),
                'max': max(vals) if vals else None}
    return {
        'conductors': n_cond, 'window_s': round(deadline - start, 2),
        'drain_s': round(drained - deadline, 2),
        'ops_per_s': n_ok / (deadline - start),
        'creates': len(creates), 'deletes': len(deletes),
        'merges': len(merges),
        'delete_modes': sorted({r['mode'] for r in deletes if r['mode']}),
        'failed': len([f for f in failures if f['at'] <= deadline]),
        'failures': len(failures), 'errors': errors,
        'crashes': [w.crash for w in workers if w.crash],
        'dropped': sum(w.dropped for w in workers),
        'create_latency_ms': stats(r['latency_ms'] for r in creates),
        'delete_latency_ms': stats(r['latency_ms'] for r in deletes),
        'create_pause_ms': stats(r['pause_ms'] for r in creates),
        'create_pause_qemu_record_ms': stats(r['qemu_record_ms']
                                             for r in creates),
        'create_pause_qemu_events_ms': stats(r['qemu_events_ms']
                                             for r in creates),
        'merge_pause_ms': stats(r['pause_ms'] for r in merges),
        'merge_pause_qemu_record_ms': stats(r['qemu_record_ms']
                                            for r in merges),
        'merge_pause_qemu_events_ms': stats(r['qemu_events_ms']
                                            for r in merges),
        'bare_pause_ms': stats(bare),
        'requests_per_s': requests / (deadline - start),
        'requests': requests, 'conn_errors': conn_errors,
        'cpu_s': cpu,
        'cpu_ms_per_op': {k: (v * 1000.0 / n_ok if n_ok else None)
                          for k, v in cpu.items()},
        'peak_rss_kib': rss,
    }


# -- output ----------------------------------------------------------------
def _f(v, digits=1):
    if v is None:
        return '-'
    return '%.*f' % (digits, v)


def _pair(s, digits=1, keys=('p50', 'p99')):
    if not s or not s.get('n'):
        return '-'
    return ' / '.join(_f(s[k], digits) for k in keys)


def _ratio(a, b):
    if not a or not b or not a.get('n') or not b.get('n') or not b['p50']:
        return '-'
    return '%.1fx' % (a['p50'] / b['p50'])


CPU_ROWS = (('conductor', 'conductor(s)'), ('agent', 'agents'),
            ('agent+children', "agents' children (qemu-img)"),
            ('qemu', 'QEMU'), ('postgres', 'PostgreSQL backends (our db)'),
            ('rabbitmq', 'RabbitMQ (whole broker, shared)'),
            ('clients', 'bench process (tenants + QMP observer)'))


#: the processes a livesnap deployment itself runs (not the broker, which
#: is shared, nor the benchmark)
OWN_KINDS = ('conductor', 'agent', 'agent+children', 'qemu', 'postgres')


def _total(per_op, kinds):
    vals = [per_op[k] for k in kinds if per_op.get(k) is not None]
    return sum(vals) if vals else None


def render(res):
    """The load section as plain-text lines."""
    out = ['6. Under load, production shape (livesnap-conductor and '
           'livesnap-agent processes, RabbitMQ, PostgreSQL)']
    if res.get('skipped'):
        return out + ['  skipped: %s' % res['skipped'], '']
    sh = res['shape']
    phases = res['phases']
    heads = ['figure'] + ['%d conductor%s' % (p['conductors'],
                                              '' if p['conductors'] == 1
                                              else 's') for p in phases]
    rows = []

    def row(label, fn):
        rows.append([label] + [fn(p) for p in phases])
    row('operations/s (succeeded)', lambda p: _f(p['ops_per_s']))
    row('creates / deletes / failed', lambda p: '%d / %d / %d' % (
        p['creates'], p['deletes'], p['failed']))
    row('create latency p50 / p95 / p99 ms', lambda p: _pair(
        p['create_latency_ms'], 0, ('p50', 'p95', 'p99')))
    row('delete latency p50 / p95 / p99 ms', lambda p: _pair(
        p['delete_latency_ms'], 0, ('p50', 'p95', 'p99')))
    row('create pause p50 / p99 ms, agent', lambda p: _pair(
        p['create_pause_ms'], 2))
    row('create pause p50 / p99 ms, QEMU (record)', lambda p: _pair(
        p['create_pause_qemu_record_ms'], 2))
    row('create pause p50 / p99 ms, QEMU (events)', lambda p: _pair(
        p['create_pause_qemu_events_ms'], 2))
    row('bare stop+cont p50 / p99 ms, QEMU (events)', lambda p: _pair(
        p['bare_pause_ms'], 2))
    row('create pause p50 / bare p50: agent, QEMU', lambda p: '%s, %s' % (
        _ratio(p['create_pause_ms'], p['bare_pause_ms']),
        _ratio(p['create_pause_qemu_events_ms'], p['bare_pause_ms'])))
    row('merge pause p50 / p99 ms, agent', lambda p: _pair(
        p['merge_pause_ms'], 2))
    row('merge pause p50 / p99 ms, QEMU (record)', lambda p: _pair(
        p['merge_pause_qemu_record_ms'], 2))
    row('merge pause p50 / p99 ms, QEMU (events)', lambda p: _pair(
        p['merge_pause_qemu_events_ms'], 2))
    row('API requests/s (tenants\' clients)', lambda p: _f(
        p['requests_per_s']))
    row('API connections failed (retried)', lambda p: str(
        p['conn_errors']))
    for key, label in CPU_ROWS:
        row('CPU ms/op, %s' % label, lambda p, k=key: _f(
            p['cpu_ms_per_op'].get(k), 2))
    row('CPU ms/op, livesnap in all (the first five)', lambda p: _f(
        _total(p['cpu_ms_per_op'], OWN_KINDS), 2))
    for key, label in (('conductor', 'conductor'), ('agent', 'agent'),
                       ('qemu', 'QEMU')):
        row('peak RSS MiB, %s (max / mean)' % label, lambda p, k=key: (
            '%s / %s' % (_f((p['peak_rss_kib'][k]['max'] or 0) / 1024.0),
                         _f((p['peak_rss_kib'][k]['mean'] or 0) / 1024.0))
            if p['peak_rss_kib'].get(k, {}).get('n') else '-'))
    out += _bench._table(heads, rows)
    names = res.get('host_names') or ['hv01', 'hv%02d' % sh['agents']]
    notes = [
        '%d agents (hosts %s..%s), %d VMs (-M none, 64 MiB qcow2), '
        '%d tenants; per VM: %d creates then %d deletes, oldest first '
        '(each a merge), %d KiB written before each create; GETs every '
        '%g s; %g s per phase; set-up %s s; livesnap processes at nice '
        '%d.'
        % (sh['agents'], names[0], names[-1], sh['vms'], sh['tenants'],
           sh['depth'], sh['depth'], sh['write_kib'],
           sh['poll_interval_s'], sh['duration_s'], res.get('setup_s'),
           sh.get('nice', 0)),
        'rates, latencies, pauses and CPU over the window (phase start to '
        'deadline); latency = POST/DELETE sent .. GET reads "succeeded"; '
        'agent = the agent\'s own figure (agent_pause_ms, or pause_ms in '
        'records without it); QEMU (record) = the QEMU-clock figure in the '
        'record (qemu_pause_ms of its steps, which pause_ms then equals), '
        '"-" where the record has none; '
        'QEMU (events) = STOP..RESUME timestamps on the benchmark\'s own QMP '
        'monitor during the operation; bare = stop and cont in one socket '
        'write, %d per VM, before the phase, same VMs.' % sh['baseline_n'],
        'CPU from /proc/PID/stat (utime+stime; the agents\' children are '
        'the qemu-img processes they waited for); peak RSS = VmHWM.',
    ]
    if sh.get('hosts'):
        notes.append(
            'on a host bed: each host a network namespace (bridge %s, '
            '%s/24) running its agent and VMs; the conductors, a private '
            'RabbitMQ and PostgreSQL (%s) in the root namespace, reached '
            'over the bridge; the RabbitMQ row is that private broker '
            '(all removed afterwards).'
            % (res['bridge'], res['bed_address'], res['database']))
    else:
        notes.append('RabbitMQ vhost %s and PostgreSQL database %s (both '
                     'removed afterwards).' % (res['vhost'], res['database']))
    for p in phases:
        if p['delete_modes'] and p['delete_modes'] != ['merge']:
            notes.append('%d conductor(s): delete modes %s'
                         % (p['conductors'], ', '.join(p['delete_modes'])))
        for err, n in sorted(p['errors'].items(), key=lambda x: -x[1])[:8]:
            notes.append('%d conductor(s): %d x %s' % (p['conductors'], n,
                                                       err))
        for crash in p['crashes'][:3]:
            notes.append('%d conductor(s): a tenant stopped: %s'
                         % (p['conductors'], crash.strip().splitlines()[-1]))
    if sh.get('rate'):
        notes.insert(1, 'offered rate %g operations/s over all VMs: one '
                        'VM\'s operations start %.2f s apart (a VM behind '
                        'goes on at once); without it each VM goes as fast '
                        'as its operations end' % (sh['rate'], sh['vms'] /
                                                   sh['rate']))
    notes += res.get('notes', [])
    out += ['  * ' + n for n in notes]
    return out + ['']
