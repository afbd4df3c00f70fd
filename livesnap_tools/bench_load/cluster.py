"""The production shape on one machine, for the load benchmark.

``livesnap-conductor`` processes (one or more, sharing one database),
one ``livesnap-agent`` process per hypervisor host, each with its own
``[agent] host``, image directory and journal directory, and ``-M none``
QEMU VMs spread over the hosts, every one registered through the REST API
as a server of a tenant project.  Everything lives under one directory;
:meth:`Cluster.stop` ends every process it started.

With ``netns`` each host's agent and VMs run inside the network namespace
named after the host (a host of ``livesnap_tools/hostbed.py``'s bed, made
by the caller), through ``ip netns exec``, which execs the command: the
pids are still the agents' and QEMUs' own.
"""

import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

from livesnap_tools import fixtures
from livesnap_tools import testvm

ADMIN_TOKEN = 'admin-token'


class ClusterError(Exception):
    pass


def in_netns(netns, args):
    """``args`` run inside network namespace ``netns`` (None: as is)."""
    return ['ip', 'netns', 'exec', netns] + args if netns else args


class LoadVM(testvm.TestVM):
    """A test VM with a second QMP monitor for the benchmark's observer
    (the first one is the agent's; a QMP socket serves one client), run
    inside network namespace ``netns`` if given.
    """

    def __init__(self, image, qmp_socket, monitor_socket, name, netns=None):
        super().__init__(image, qmp_socket, name=name, timeout=30.0)
        self.monitor_socket = monitor_socket
        self.netns = netns

    def command(self):
        cmd = super().command()
        at = cmd.index('-daemonize')
        return in_netns(self.netns, cmd[:at] + [
            '-qmp', 'unix:%s,server=on,wait=off' % self.monitor_socket]
            + cmd[at:])

    def _files(self):
        return super()._files() + [self.monitor_socket]


def tenant_of(index, n_vms, n_tenants):
    """Tenant number (0-based) owning VM ``index``: consecutive VMs share a
    tenant, so 40 VMs and 20 tenants give each tenant a pair.
    """
    return index * n_tenants // n_vms


class Cluster(object):
    """Agents, VMs and conductors of one benchmark run.

    :param root: a fresh directory for configs, images, journals, logs.
    :param extra: configuration appended to the shared config file.
    :param host_names: the hosts' names (default hv01, hv02, ...).
    :param netns: run each host's agent and VMs in the network namespace
        named after the host.
    """

    def __init__(self, root, transport_url, database_url, agents, vms,
                 tenants, disk_size, extra='', nice=0, host_names=None,
                 netns=False):
        self.root = pathlib.Path(root)
        #: niceness of the conductor and agent processes
        self.nice = nice
        self.hosts = list(host_names or ['hv%02d' % (i + 1)
                                         for i in range(agents)])
        if len(self.hosts) != agents:
            raise ClusterError('%d host names for %d agents'
                               % (len(self.hosts), agents))
        self.netns = netns
        self.tenants = ['tenant-%02d' % (i + 1) for i in range(tenants)]
        self.tokens = {ADMIN_TOKEN: {'project_id': 'admin',
                                     'roles': ['admin']}}
        for t in self.tenants:
            self.tokens[t + '-token'] = {'project_id': t,
                                         'roles': ['member']}
        self.disk_size = disk_size
        self.vms = []
        for i in range(vms):
            host = self.hosts[i % agents]
            tenant = self.tenants[tenant_of(i, vms, tenants)]
            name = 'vm%03d' % (i + 1)
            hostdir = self.root / host
            self.vms.append({
                'name': name, 'host': host, 'project': tenant,
                'token': tenant + '-token',
                'image': str(hostdir / 'images' / ('%s-vda.qcow2' % name)),
                'qmp_socket': str(hostdir / ('%s.qmp' % name)),
                'monitor_socket': str(hostdir / ('%s.mon' % name)),
                'vm': None})
        self.procs = {}
        #: name -> (module, override) of every process started, to start
        #: it again the same way (:meth:`respawn`)
        self.spawned = {}
        self.conductor_urls = []
        self.config_file = self.root / 'livesnap.conf'
        token_file = self.root / 'tokens.json'
        token_file.write_text(json.dumps(self.tokens))
        self.config_file.write_text(
            '[DEFAULT]\ntransport_url = %s\nstate_path = %s\n'
            '[api]\ntoken_file = %s\n'
            '[database]\nconnection = %s\n'
            % (transport_url, self.root / 'state', token_file,
               database_url) + extra)

    # -- processes ----------------------------------------------------------
    def _spawn(self, name, module, override, netns=None):
        conf = self.root / ('%s.conf' % name)
        conf.write_text(override)
        log = open(self.root / ('%s.log' % name), 'ab')
        try:
            proc = subprocess.Popen(
                in_netns(netns, [sys.executable, '-m', module,
                                 '--config-file', str(self.config_file),
                                 '--config-file', str(conf)]),
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=(lambda: os.nice(self.nice)) if self.nice
                else None)
        finally:
            log.close()
        self.procs[name] = proc
        self.spawned[name] = (module, override, netns)
        return proc

    def respawn(self, name):
        """Start process ``name`` again as it was started (after it died
        or was killed); does not wait for it to be ready.
        """
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            raise ClusterError('%s is still running' % name)
        if proc is not None:
            proc.wait()
        module, override, netns = self.spawned[name]
        return self._spawn(name, module, override, netns)

    def log(self, name, tail=3000):
        try:
            return (self.root / ('%s.log' % name)).read_text(
                errors='replace')[-tail:]
        except OSError:
            return ''

    def start_conductor(self, port):
        """Start conductor number ``len(conductor_urls) + 1`` on ``port``
        and wait until its API answers.  Returns its base URL.
        """
        name = 'conductor%d' % (len(self.conductor_urls) + 1)
        proc = self._spawn(name, 'conductor.service',
                           '[api]\nport = %d\n[conductor]\nhost = %s\n'
                           % (port, name))
        url = 'http://127.0.0.1:%d' % port
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api('GET', '/v1/hosts', base_url=url)
                break
            except (OSError, ClusterError):
                if proc.poll() is not None:
                    raise ClusterError('%s exited: %s'
                                       % (name, self.log(name)))
                if time.monotonic() > deadline:
                    raise ClusterError('%s does not answer: %s'
                                       % (name, self.log(name)))
                time.sleep(0.2)
        self.conductor_urls.append(url)
        return url

    def start_agents(self, heartbeat_interval, extra=''):
        """Start one agent per host; ``extra``: more of its config."""
        for host in self.hosts:
            d = self.root / host
            for sub in ('images', 'journal', 'state'):
                os.makedirs(d / sub, exist_ok=True)
            self._spawn('agent-%s' % host, 'agent.service',
                        '[DEFAULT]\nstate_path = %s\n'
                        '[agent]\nhost = %s\nimage_dirs = %s\n'
                        'journal_dir = %s\nheartbeat_interval = %s\n'
                        % (d / 'state', host, d / 'images', d / 'journal',
                           heartbeat_interval) + extra,
                        netns=host if self.netns else None)

    def wait_hosts_up(self, timeout=180):
        """Block until every agent's host reads ``up`` in GET /v1/hosts."""
        deadline = time.monotonic() + timeout
        while True:
            hosts = self.api('GET', '/v1/hosts')['hosts']
            up = {h['name'] for h in hosts if h['state'] == 'up'}
            if up >= set(self.hosts):
                return
            for host in self.hosts:
                proc = self.procs['agent-%s' % host]
                if proc.poll() is not None:
                    raise ClusterError('agent %s exited: %s'
                                       % (host, self.log('agent-' + host)))
            if time.monotonic() > deadline:
                raise ClusterError('hosts never up: %s'
                                   % sorted(set(self.hosts) - up))
            time.sleep(0.25)

    # -- VMs ----------------------------------------------------------------
    def start_vms(self, workers=4):
        """Create each VM's base image and boot it (a few at a time)."""
        from agent import images

        def boot(spec):
            images.create_base(spec['image'], self.disk_size)
            vm = LoadVM(spec['image'], spec['qmp_socket'],
                        spec['monitor_socket'], name=spec['name'],
                        netns=spec['host'] if self.netns else None)
            spec['vm'] = vm
            vm.start()
        for spec in self.vms:
            os.makedirs(os.path.dirname(spec['image']), exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for fut in [pool.submit(boot, s) for s in self.vms]:
                fut.result()

    def register_servers(self):
        for spec in self.vms:
            self.api('POST', '/v1/servers', {'server': {
                'id': spec['name'], 'name': spec['name'],
                'project_id': spec['project'], 'host': spec['host'],
                'qmp_socket': spec['qmp_socket'],
                'disks': [{'name': 'vda', 'path': spec['image']}]}})

    # -- HTTP for set-up ----------------------------------------------------
    def api(self, method, path, body=None, token=ADMIN_TOKEN,
            base_url=None):
        url = (base_url or self.conductor_urls[0]) + path
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header('X-Auth-Token', token)
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b'null')
        except urllib.error.HTTPError as exc:
            raise ClusterError('%s %s: HTTP %s %s'
                               % (method, path, exc.code,
                                  exc.read()[:500]))

    # -- accounting -----------------------------------------------------
    def pids(self):
        """``{kind: [pid]}`` of the processes this cluster runs."""
        out = {'conductor': [], 'agent': [], 'qemu': []}
        for name, proc in self.procs.items():
            if proc.poll() is None:
                out['conductor' if name.startswith('conductor')
                    else 'agent'].append(proc.pid)
        out['qemu'] = [s['vm'].pid for s in self.vms
                       if s['vm'] is not None and s['vm'].pid]
        return out

    def dead(self):
        """Names of started processes that have exited."""
        return sorted(n for n, p in self.procs.items()
                      if p.poll() is not None)

    # -- teardown -------------------------------------------------------
    def stop(self):
        """Stop every process and VM; safe to repeat."""
        fixtures.stop_processes(self.procs.values(), timeout=30)
        for spec in self.vms:
            vm = spec['vm']
            if vm is None:
                continue
            if vm.pid is None:  # interrupted between daemonize and pidfile
                try:
                    with open(vm.pidfile) as f:
                        vm.pid = int(f.read().strip())
                except (OSError, ValueError):
                    pass
            vm.kill()
