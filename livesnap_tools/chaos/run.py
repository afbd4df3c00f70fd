"""One chaos run: build the deployment, load it, break it, check it.

See :mod:`livesnap_tools.chaos` for what it does and docs/faults.md ("Chaos
run") for how to read its table.
"""

import os
import re
import shutil
import sys
import threading
import time

import sqlalchemy as sa

from livesnap_tools.bench_load import cluster as cluster_mod
from livesnap_tools.bench_load import LIMITS
from livesnap_tools.bench_load import monitor as monitor_mod
from livesnap_tools.chaos import faults
from livesnap_tools.chaos import libvirt as lv
from livesnap_tools.chaos import services
from livesnap_tools.chaos import tenants

MiB = 1024 * 1024

#: conductor settings of the run (beside the load benchmark's limits): a
#: host is "down" soon after its agent dies, so a killed agent is noticed
EXTRA = LIMITS.replace('host_down_time = 120', 'host_down_time = 30')


class Env(object):
    """Everything a run has started; what the injector and the checks
    reach through.
    """

    def __init__(self, opts, janitor):
        self.opts = opts
        self.janitor = janitor
        self.t_start = time.time()
        self.cluster = self.rabbit = self.postgres = None
        self.small_disk = None
        self.observer = None
        self.workers = []
        self.vm_state = {}
        self.qemu_killed = []
        #: (host, method, operation id) of the tasks thrown away
        self.lost_tasks = []
        #: threads booting killed QEMUs again
        self.boots = []
        self.boot_errors = []
        self._engine = None
        self.libvirt = getattr(opts, 'driver', 'qemu') == 'libvirt'

    # -- set-up -------------------------------------------------------------
    def build(self):
        opts = self.opts
        from livesnap_tools import fixtures
        root = self.janitor.tmpdir('lsc-')
        self.root = root
        self.rabbit = services.private_rabbit(fixtures.free_port(),
                                              fixtures.free_port())
        self.janitor.push('remove the private RabbitMQ node',
                          self.rabbit.destroy)
        self.rabbit.start()
        self.postgres = services.PrivatePostgres(fixtures.free_port())
        self.janitor.push('remove the private PostgreSQL cluster',
                          self.postgres.destroy)
        self.postgres.start()
        self.postgres.create_database('livesnap')
        self.database_url = self.postgres.url('livesnap')
        print('chaos: RabbitMQ node on port %d, PostgreSQL on port %d, '
              'directory %s' % (self.rabbit.port, self.postgres.port, root),
              file=sys.stderr)
        cl = cluster_mod.Cluster(
            root, self.rabbit.url, self.database_url, opts.agents, opts.vms,
            opts.tenants, opts.disk_mib * MiB, extra=EXTRA)
        self.cluster = cl
        if 'image_dir_full' in opts.kinds and services.can_mount():
            self.small_disk = services.SmallDisk(
                os.path.join(root, cl.hosts[0], 'images'),
                opts.small_disk_mib * MiB)
            self.small_disk.mount()
            self.janitor.push('unmount %s' % self.small_disk.path,
                              self.small_disk.unmount)
        if self.libvirt:
            self._libvirtd_up()
        self.janitor.push('stop the chaos cluster', cl.stop)
        if self.libvirt:
            self.observer = lv.Observer()
        else:
            self.observer = monitor_mod.Observer()
        self.janitor.push('close the observer', self.observer.close)
        for _ in range(opts.conductors):
            cl.start_conductor(fixtures.free_port())
        cl.start_agents(heartbeat_interval=2.0,
                        extra=lv.AGENT_EXTRA if self.libvirt else '')
        if self.libvirt:
            self._start_domains()
        else:
            cl.start_vms()
        for spec in cl.vms:
            self.observer.connect(spec['name'], spec['monitor_socket'])
            up = threading.Event()
            up.set()
            self.vm_state[spec['name']] = {'up': up,
                                           'lock': threading.Lock()}
        cl.wait_hosts_up()
        if self.libvirt:
            for spec in cl.vms:
                cl.api('POST', '/v1/servers', {'server': {
                    'id': spec['name'], 'name': spec['name'],
                    'project_id': spec['project'], 'host': spec['host'],
                    'driver': 'libvirt', 'domain': spec['vm'].uuid}})
        else:
            cl.register_servers()

    def _libvirtd_up(self):
        from livesnap_tools import libvirtd
        why = libvirtd.why_unavailable()
        if why:
            raise cluster_mod.ClusterError('libvirt: %s' % why)
        started = list(libvirtd._started)
        libvirtd.ensure_running()
        if libvirtd._started != started:
            # ours: stopped at the end (a libvirtd that was running before
            # is left running, restarted or not)
            self.janitor.push('stop libvirtd', libvirtd.stop)

    def _start_domains(self):
        from agent import images
        for spec in self.cluster.vms:
            os.makedirs(os.path.dirname(spec['image']), exist_ok=True)
            images.create_base(spec['image'], self.cluster.disk_size)
            dom = lv.Domain(spec['name'], spec['image'], self.observer)
            spec['vm'] = dom
            self.observer.define(dom)

    # -- helpers for the injector and the checks ----------------------------
    def spec(self, name):
        return [s for s in self.cluster.vms if s['name'] == name][0]

    def query(self, sql, timeout=120, **params):
        """Rows of ``sql`` on the run's database, retried while the
        database restarts.
        """
        if self._engine is None:
            self._engine = sa.create_engine(self.database_url,
                                            pool_pre_ping=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self._engine.connect() as c:
                    return c.execute(sa.text(sql), params).all()
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def wait_conductor(self, name, timeout=120):
        override = self.cluster.spawned[name][1]
        port = int(re.search(r'port = (\d+)', override).group(1))
        url = 'http://127.0.0.1:%d' % port
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.cluster.api('GET', '/v1/hosts', base_url=url)
                return
            except (OSError, cluster_mod.ClusterError):
                if time.monotonic() > deadline:
                    raise cluster_mod.ClusterError(
                        '%s does not answer again' % name)
                time.sleep(0.2)

    def disk_busy(self, name):
        rows = self.query('SELECT operation_id FROM disks WHERE '
                          'server_id = :s', s=name)
        return any(r[0] for r in rows)

    def boot_again(self, name, timeout=120):
        """Boot VM ``name`` on its disk's active image once the disk is
        free (or after ``timeout``), and watch it again.
        """
        deadline = time.monotonic() + timeout
        while self.disk_busy(name) and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.disk_busy(name):
            self.boot_errors.append('%s: disk still locked %d s after its '
                                    'QEMU was killed' % (name, timeout))
        active = self.query('SELECT active_image FROM disks WHERE '
                            'server_id = :s', s=name)[0][0]
        spec = self.spec(name)
        if self.libvirt:
            # libvirt boots it from the domain's definition, which the
            # agent keeps on the active image
            self.observer.start(name)
            return
        spec['vm'].kill()
        vm = cluster_mod.LoadVM(active, spec['qmp_socket'],
                                spec['monitor_socket'], name=name)
        vm.start()
        spec['vm'] = vm
        spec['image'] = active
        self.observer.reconnect(name, spec['monitor_socket'])

    def pick_operation(self, rng):
        rows = self.query("SELECT id FROM operations WHERE status IN "
                          "('pending', 'running') AND task IS NOT NULL")
        if not rows:
            rows = self.query("SELECT id FROM operations WHERE task IS NOT "
                              "NULL ORDER BY created_at DESC LIMIT 5")
        return rng.choice(rows)[0] if rows else None

    def close(self):
        if self._engine is not None:
            self._engine.dispose()


# -- the run ----------------------------------------------------------------
def run(opts, janitor):
    env = Env(opts, janitor)
    janitor.push('close the database engine', env.close)
    t0 = time.monotonic()
    env.build()
    result = {'seed': opts.seed, 'setup_s': round(time.monotonic() - t0, 1),
              'shape': {k: getattr(opts, k) for k in (
                  'driver', 'agents', 'vms', 'tenants', 'conductors',
                  'duration', 'depth', 'kinds', 'gap_min', 'gap_max')}}
    cl = env.cluster
    n_cond = len(cl.conductor_urls)
    start = time.time()
    deadline = start + opts.duration
    env.t_start = start
    env.workers = [tenants.ChaosWorker(
        spec, cl.conductor_urls[i % n_cond], deadline, opts.depth,
        opts.poll_interval, env.observer, env.vm_state[spec['name']],
        seed=i + 1) for i, spec in enumerate(cl.vms)]
    threads = [threading.Thread(target=w.run, name='tenant-' + w.name,
                                daemon=True) for w in env.workers]
    injector = faults.Injector(env, opts.seed, opts.kinds,
                               (opts.gap_min, opts.gap_max))
    print('chaos: seed %d; %d s of load and faults (%s)'
          % (opts.seed, opts.duration, ', '.join(opts.kinds)),
          file=sys.stderr)
    try:
        for t in threads:
            t.start()
        time.sleep(min(2.0, opts.duration / 10))
        injector.start()
        while time.time() < deadline:
            time.sleep(0.5)
    except BaseException:
        # Ctrl-C, SIGTERM or an error: stop quickly, the janitor cleans up
        injector.stop(timeout=10)
        for w in env.workers:
            w.stop_now = True
        raise
    injector.stop()
    for w in env.workers:
        w.deadline = min(w.deadline, time.time())
    faults_end = injector.last_fault_end or time.time()
    for t in threads:
        t.join(tenants.tenants_mod.OP_TIMEOUT + 60)
    for w in env.workers:
        w.stop_now = True
    result['faults'] = injector.counts
    result['faults_skipped'] = injector.skipped
    result['fault_errors'] = injector.errors
    result['tenant_threads_alive'] = [t.name for t in threads
                                      if t.is_alive()]
    print('chaos: load stopped; settling (at most %d s)' % opts.settle,
          file=sys.stderr)
    from livesnap_tools.chaos import checks
    result.update(checks.settle(env, faults_end, opts.settle))
    result['checks'] = checks.invariants(env, result)
    result['operations'] = checks.operations(env)
    result['refusals'] = checks.refusals(env)
    result['longest_pause_ms'], result['pause_vm'] = checks.longest_pause(
        env)
    if getattr(opts, 'keep_logs', None):
        os.makedirs(opts.keep_logs, exist_ok=True)
        for name in os.listdir(env.root):
            if name.endswith(('.log', '.conf')):
                shutil.copy(os.path.join(env.root, name), opts.keep_logs)
    result['qemu_killed'] = env.qemu_killed
    result['lost_tasks'] = env.lost_tasks
    result['boot_errors'] = env.boot_errors
    result['worker_errors'] = sum(len(w.errors) for w in env.workers)
    result['worker_error_samples'] = [e.strip().splitlines()[-1][:200]
                                      for w in env.workers
                                      for e in w.errors][:5]
    return result
