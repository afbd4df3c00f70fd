"""A test bed of several hypervisor hosts on one machine.

Each host is a network namespace named after the host (``[agent] host``
equals the namespace's name) with one end of a veth pair as its ``eth0``
and an address of its own (``NET.11``, ``NET.12``, ...).  The other ends
are ports of a bridge in the root namespace, which holds ``NET.1``.  In
each namespace run the host's ``livesnap-agent`` and its QEMU VMs
(``ip netns exec``), with an image directory and a journal of their own.
The conductors run in the root namespace.

RabbitMQ and PostgreSQL are private ones (``livesnap_tools/broker.py`` and
``livesnap_tools/chaos/services.py``) listening on the bridge address only:
agents reach the broker over their veth, and no process uses the
machine's shared services on 127.0.0.1.

Cutting a host off (:meth:`HostBed.cut`) sets its veth's root end down:
its agent and VMs keep running, but nothing crosses the link until
:meth:`HostBed.restore`.

Everything the bed makes (namespaces, bridge, processes, the broker's and
database's directories) is recorded in ``ROOT/bed.json`` and removed by
:meth:`HostBed.stop`, or by :func:`teardown` from that file (``./tools/run
--stop``), also after a failed start.

Run as ``python -m livesnap_tools.hostbed demo --hosts N --root DIR`` it is the
demo of ``./tools/run --hosts N`` (see docs/hosts.md).
"""

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid

from livesnap_tools import broker
from livesnap_tools.chaos import services
from livesnap_tools import fixtures
from livesnap_tools import testvm

#: options that make host failures show within seconds
CONDUCTOR_FAST = ('[conductor]\nhost_down_time = 3\nperiodic_interval = 0.5\n'
                  'operation_timeout = 4\ntask_receipt_timeout = 1\n'
                  'agent_call_timeout = 2\n')
AGENT_FAST = ('[agent]\nheartbeat_interval = 0.5\n'
              'report_resend_interval = 1\n')
#: held while a bed picks its network
LOCK_FILE = '/run/lock/livesnap-hostbed.lock'


class BedError(Exception):
    pass


def _ip(*args, check=True):
    """Run ``ip ARGS``; :raises: BedError if it fails and ``check``."""
    proc = subprocess.run(['ip'] + list(args), capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise BedError('ip %s failed: %s' % (' '.join(args),
                                              proc.stderr.strip()))
    return proc


def unavailable():
    """Why the bed cannot run here, or None: it needs root, ``ip netns``,
    RabbitMQ, PostgreSQL and QEMU.
    """
    if os.geteuid() != 0:
        return 'not root'
    try:
        if _ip('netns', 'list', check=False).returncode != 0:
            return '"ip netns" does not work here'
    except OSError:
        return 'no "ip" command'
    if not broker.available():
        return 'rabbitmq-server is not installed'
    if not os.path.exists(os.path.join(services.PG_BIN, 'initdb')):
        return 'PostgreSQL server binaries are not installed'
    for tool in (testvm.QEMU, 'qemu-img'):
        if shutil.which(tool) is None:
            return '%s is not installed' % tool
    return None


def free_net():
    """The first ``10.77.X`` (/24) that no interface of this machine uses."""
    out = _ip('-o', '-4', 'addr', 'show').stdout
    for x in range(256):
        if ' 10.77.%d.' % x not in out:
            return '10.77.%d' % x
    raise BedError('no free 10.77.X.0/24 network')


class BridgeRabbit(broker.PrivateRabbit):
    """A private RabbitMQ node that listens on ``address`` only and lets
    ``guest`` in from the network (RabbitMQ allows it on loopback only
    by default).
    """

    def __init__(self, address, port, dist_port):
        super().__init__(port, dist_port)
        self.address = address
        with open(os.path.join(self.dir, 'rabbitmq.conf'), 'w') as f:
            f.write('loopback_users = none\n')

    @property
    def url(self):
        return 'rabbit://guest:guest@%s:%d/' % (self.address, self.port)

    def _env(self):
        env = super()._env()
        env['RABBITMQ_NODE_IP_ADDRESS'] = self.address
        return env


class HostVM(testvm.TestVM):
    """A ``-M none`` test VM run inside a host's namespace, with a second
    QMP monitor for the bed's own checks (the first is the agent's; a QMP
    socket serves one client at a time).  :meth:`session`, and so
    :meth:`status`, :meth:`write` and :meth:`flush`, use the second.
    """

    def __init__(self, netns, image, qmp_socket, monitor_socket, name):
        super().__init__(image, qmp_socket, name=name, timeout=30.0)
        self.netns = netns
        self.monitor_socket = monitor_socket

    def command(self):
        cmd = super().command()
        at = cmd.index('-daemonize')
        return (['ip', 'netns', 'exec', self.netns] + cmd[:at] +
                ['-qmp', 'unix:%s,server=on,wait=off' % self.monitor_socket]
                + cmd[at:])

    def _files(self):
        return super()._files() + [self.monitor_socket]

    def session(self):
        from agent.driver.qemu import qmp
        return qmp.QMPSession(self.monitor_socket, timeout=self.timeout)


class HostBed(fixtures.APIClientMixin):
    """Hosts, broker, database and conductors of one bed.

    :param root: a directory of its own for configs, images, logs.
    :param hosts: number of hypervisor hosts (namespaces).
    :param tag: a short name (at most 6 characters) that makes the
        bridge's, veths' and namespaces' names unique on this machine.
    :param host_names: the hosts' (and namespaces') names; default
        ``TAG-hv1`` ... (``hv1`` ... when ``tag`` is ``demo``).
    :param tokens: the API's token file content (default: the tests').
    :param extra: configuration for every process.
    :param agent_extra: {host: configuration} for one host's agent only.
    """

    def __init__(self, root, hosts=3, tag=None, net=None, host_names=None,
                 tokens=None, extra='', agent_extra=None, api_port=None):
        self.root = os.path.abspath(str(root))
        os.makedirs(self.root, exist_ok=True)
        self.tag = tag or uuid.uuid4().hex[:6]
        #: 10.77.X, chosen when the network is made unless given
        self.net = net
        self.hosts = list(host_names or ['%s-hv%d' % (self.tag, i + 1)
                                         for i in range(hosts)])
        self.bridge = 'lsb-%s' % self.tag
        self.veths = {h: 'lsv-%s-%d' % (self.tag, i + 1)
                      for i, h in enumerate(self.hosts)}
        self.addresses = {}
        self.address = None
        self.tokens = tokens or fixtures.TOKENS
        self.extra = extra
        self.agent_extra = agent_extra or {}
        self.api_port = api_port or fixtures.free_port()
        self.base_url = 'http://127.0.0.1:%d' % self.api_port
        self.config_file = os.path.join(self.root, 'livesnap.conf')
        self.rabbit = None
        self.pg = None
        self.procs = {}
        self.vms = {}
        self.made = {'bridge': None, 'namespaces': []}

    # -- the record of what exists, for teardown --------------------------
    def describe(self):
        """What the bed made, as :func:`teardown` reads it."""
        procs = {name: {'pid': p.pid, 'mark': self.config_file}
                 for name, p in self.procs.items()}
        for name, vm in self.vms.items():
            pid = vm.pid
            if pid is None:
                try:
                    with open(vm.pidfile) as f:
                        pid = int(f.read().strip())
                except (OSError, ValueError):
                    pid = None
            procs['vm-' + name] = {'pid': pid, 'mark': vm.qmp_socket,
                                   'files': vm._files()}
        return {'root': self.root, 'bridge': self.made['bridge'],
                'namespaces': list(self.made['namespaces']),
                'procs': procs, 'base_url': self.base_url,
                'hosts': self.hosts,
                'rabbit': vars(self.rabbit) if self.rabbit else None,
                'postgres': vars(self.pg) if self.pg else None}

    def save(self):
        path = os.path.join(self.root, 'bed.json')
        with open(path + '.tmp', 'w') as f:
            json.dump(self.describe(), f, indent=1)
        os.replace(path + '.tmp', path)

    # -- network ----------------------------------------------------------
    def make_network(self):
        """The bridge with ``NET.1`` and a namespace per host, each with
        its veth as ``eth0`` at its own address.
        """
        _ip('link', 'add', self.bridge, 'type', 'bridge')
        self.made['bridge'] = self.bridge
        self.save()
        # Two beds starting at once must not take the same network.
        with open(LOCK_FILE, 'a') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.net = self.net or free_net()
            self.address = '%s.1' % self.net
            _ip('addr', 'add', self.address + '/24', 'dev', self.bridge)
        self.addresses = {h: '%s.%d' % (self.net, 11 + i)
                          for i, h in enumerate(self.hosts)}
        _ip('link', 'set', self.bridge, 'up')
        for host in self.hosts:
            _ip('netns', 'add', host)
            self.made['namespaces'].append(host)
            self.save()
            veth = self.veths[host]
            _ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0',
                'netns', host)
            _ip('link', 'set', veth, 'master', self.bridge)
            _ip('link', 'set', veth, 'up')
            _ip('-n', host, 'addr', 'add', self.addresses[host] + '/24',
                'dev', 'eth0')
            _ip('-n', host, 'link', 'set', 'eth0', 'up')
            _ip('-n', host, 'link', 'set', 'lo', 'up')

    def cut(self, host):
        """Cut ``host`` off the network (its veth down); nothing else of
        it changes.
        """
        _ip('link', 'set', self.veths[host], 'down')

    def restore(self, host):
        _ip('link', 'set', self.veths[host], 'up')

    # -- services -----------------------------------------------------------
    def start_services(self):
        """The private broker and database, on the bridge address."""
        port, dist = fixtures.free_port(), fixtures.free_port()
        self.rabbit = BridgeRabbit(self.address, port, dist)
        self.save()
        self.rabbit.start()
        self.pg = services.PrivatePostgres(fixtures.free_port(),
                                           host=self.address,
                                           allow=[self.net + '.0/24'])
        self.save()
        self.pg.start()
        self.pg.create_database('livesnap')
        self.database_url = self.pg.url('livesnap')
        token_file = os.path.join(self.root, 'tokens.json')
        with open(token_file, 'w') as f:
            json.dump(self.tokens, f)
        with open(self.config_file, 'w') as f:
            f.write('[DEFAULT]\ntransport_url = %s\nstate_path = %s\n'
                    '[api]\ntoken_file = %s\n[database]\nconnection = %s\n'
                    % (self.rabbit.url, os.path.join(self.root, 'state'),
                       token_file, self.database_url) + self.extra)

    # -- processes ----------------------------------------------------------
    def _spawn(self, name, module, override, netns=None):
        conf = os.path.join(self.root, '%s.conf' % name)
        with open(conf, 'w') as f:
            f.write(override)
        args = [sys.executable, '-m', module, '--config-file',
                self.config_file, '--config-file', conf]
        if netns:
            args = ['ip', 'netns', 'exec', netns] + args
        with open(os.path.join(self.root, '%s.log' % name), 'ab') as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.procs[name] = proc
        self.save()
        return proc

    def log(self, name, tail=3000):
        try:
            with open(os.path.join(self.root, '%s.log' % name),
                      errors='replace') as f:
                return f.read()[-tail:]
        except OSError:
            return ''

    def start_conductor(self, name='conductor'):
        """A conductor in the root namespace, its API on 127.0.0.1."""
        proc = self._spawn(name, 'conductor.service',
                           '[api]\nport = %d\n[conductor]\nhost = %s\n'
                           % (self.api_port, name))
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.api('GET', '/v1/hosts', token=self.admin_token)[0] \
                        == 200:
                    return
            except OSError:
                pass
            if proc.poll() is not None:
                raise BedError('%s exited: %s' % (name, self.log(name)))
            if time.monotonic() > deadline:
                raise BedError('%s does not answer: %s'
                               % (name, self.log(name)))
            time.sleep(0.2)

    @property
    def admin_token(self):
        return [t for t, v in self.tokens.items()
                if 'admin' in v.get('roles', ())][0]

    def host_dir(self, host, sub=''):
        return os.path.join(self.root, host, sub)

    def start_agent(self, host):
        """``host``'s agent, inside its namespace."""
        for sub in ('images', 'journal', 'state', 'run'):
            os.makedirs(self.host_dir(host, sub), exist_ok=True)
        self._spawn('agent-%s' % host, 'agent.service',
                    '[DEFAULT]\nstate_path = %s\n'
                    '[agent]\nhost = %s\nimage_dirs = %s\njournal_dir = %s\n'
                    % (self.host_dir(host, 'state'), host,
                       self.host_dir(host, 'images'),
                       self.host_dir(host, 'journal'))
                    + self.agent_extra.get(host, ''), netns=host)

    def restart_agent(self, host, extra=None, timeout=120):
        """Stop ``host``'s agent and start it again, from now on with
        ``extra`` as its own configuration if given (as ``agent_extra``);
        returns once the new agent's heartbeats reach the conductor.
        """
        if extra is not None:
            self.agent_extra[host] = extra
        before = self.host_records()[host]['agent_started_at']
        proc = self.procs.pop('agent-%s' % host, None)
        if proc is not None:
            fixtures.stop_processes([proc], timeout=30)
        self.start_agent(host)
        deadline = time.monotonic() + timeout
        while True:
            record = self.host_records().get(host, {})
            if record.get('state') == 'up' and \
                    record.get('agent_started_at') != before:
                return
            if self.procs['agent-%s' % host].poll() is not None:
                raise BedError('agent %s exited: %s'
                               % (host, self.log('agent-' + host)))
            if time.monotonic() > deadline:
                raise BedError('agent %s not back after %ss'
                               % (host, timeout))
            time.sleep(0.2)

    def host_records(self):
        """``{host: its GET /v1/hosts record}``."""
        hosts = self.ok('GET', '/v1/hosts', token=self.admin_token)['hosts']
        return {h['name']: h for h in hosts}

    def host_states(self):
        return {name: h['state'] for name, h in self.host_records().items()}

    def wait_host(self, host, state='up', timeout=120):
        """Block until GET /v1/hosts shows ``host`` in ``state``."""
        deadline = time.monotonic() + timeout
        while self.host_states().get(host) != state:
            proc = self.procs.get('agent-%s' % host)
            if state == 'up' and proc is not None and \
                    proc.poll() is not None:
                raise BedError('agent %s exited: %s'
                               % (host, self.log('agent-' + host)))
            if time.monotonic() > deadline:
                raise BedError('host %s not %s after %ss' % (host, state,
                                                            timeout))
            time.sleep(0.2)

    def start(self):
        """Network, services, a conductor, every host's agent.  On failure
        everything made so far is removed.
        """
        try:
            self.make_network()
            self.start_services()
            self.start_conductor()
            for host in self.hosts:
                self.start_agent(host)
            for host in self.hosts:
                self.wait_host(host)
        except BaseException:
            self.stop()
            raise
        return self

    # -- VMs ----------------------------------------------------------------
    def add_vm(self, host, name, size=64 * 1024 * 1024):
        """Create a disk in ``host``'s image directory and boot a VM on it
        inside ``host``'s namespace.  :returns: the :class:`HostVM`.
        """
        from agent import images
        image = self.host_dir(host, 'images/%s-vda.qcow2' % name)
        images.create_base(image, size)
        vm = HostVM(host, image, self.host_dir(host, 'run/%s.qmp' % name),
                    self.host_dir(host, 'run/%s.mon' % name), name)
        vm.host = host
        self.vms[name] = vm
        try:
            vm.start()
        finally:
            self.save()
        return vm

    def register(self, vm, project='p1'):
        """Register ``vm`` as server ``vm.name`` of ``project``."""
        return self.register_server(vm.name, vm.image, vm.qmp_socket,
                                    project=project, host=vm.host)

    def register_server(self, server_id, image, qmp_socket=None,
                        project='p1', host=None, disk='vda'):
        return self.ok('POST', '/v1/servers', {'server': {
            'id': server_id, 'name': server_id, 'project_id': project,
            'host': host, 'qmp_socket': qmp_socket,
            'disks': [{'name': disk, 'path': image}]}},
            token=self.admin_token, status=201)['server']

    # -- teardown -----------------------------------------------------------
    def stop(self):
        """Remove everything the bed made; safe to repeat."""
        self.save()
        teardown(self.describe())
        self.procs = {}
        self.vms = {}
        self.made = {'bridge': None, 'namespaces': []}
        self.rabbit = self.pg = None
        self.save()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _pid_is(pid, mark):
    """True if ``pid`` runs and its command line names ``mark`` (so a
    recycled pid is never signalled).
    """
    if not pid or not testvm._pid_alive(pid):
        return False
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return mark.encode() in f.read()
    except OSError:
        return False


def _end(pids, timeout=20):
    """SIGTERM ``pids``, SIGKILL those still there after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(testvm._pid_alive(p) for p in pids) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [p for p in pids if testvm._pid_alive(p)]
        if not pids:
            return


def _reap(pids):
    """Collect the exit status of those ``pids`` that are our children."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def teardown(record):
    """Remove what :meth:`HostBed.describe` lists: its processes (and any
    other process left in its namespaces), the namespaces, the bridge,
    the broker and the database.  Goes on past errors; :raises: BedError
    at the end naming what could not be removed.
    """
    errors = []
    procs = record.get('procs') or {}
    pids = [p['pid'] for p in procs.values()
            if _pid_is(p.get('pid'), p['mark'])]
    _end(pids)
    _reap(pids)
    for p in procs.values():
        for path in p.get('files', ()):
            try:
                os.unlink(path)
            except OSError:
                pass
    for ns in record.get('namespaces') or ():
        out = _ip('netns', 'pids', ns, check=False).stdout.split()
        _end([int(p) for p in out if p.isdigit()], timeout=5)
        proc = _ip('netns', 'del', ns, check=False)
        if proc.returncode != 0:
            errors.append('namespace %s: %s' % (ns, proc.stderr.strip()))
    if record.get('bridge'):
        proc = _ip('link', 'del', record['bridge'], check=False)
        if proc.returncode != 0 and 'Cannot find' not in proc.stderr:
            errors.append('bridge %s: %s' % (record['bridge'],
                                             proc.stderr.strip()))
    for key, cls in (('rabbit', BridgeRabbit),
                     ('postgres', services.PrivatePostgres)):
        if record.get(key):
            service = cls.__new__(cls)
            service.__dict__.update(record[key])
            try:
                service.destroy()
            except Exception as exc:
                errors.append('%s: %s' % (key, exc))
    if errors:
        raise BedError('; '.join(errors))


# -- the demo of ./tools/run --hosts N --------------------------------------
def _demo_start(args):
    admin, demo = secrets.token_hex(16), secrets.token_hex(16)
    tokens = {admin: {'project_id': 'admin', 'roles': ['admin']},
              demo: {'project_id': 'demo', 'roles': ['member']}}
    bed = HostBed(args.root, tag='demo', tokens=tokens,
                  host_names=['hv%d' % (i + 1) for i in range(args.hosts)],
                  net=args.net, api_port=args.port,
                  agent_extra={}, extra=(
                      '[DEFAULT]\ndebug = %s\n' % args.debug +
                      '[conductor]\nhost_down_time = 10\n'
                      '[agent]\nheartbeat_interval = 2.0\n'))
    bed.start()
    try:
        for host in bed.hosts:
            vm = bed.add_vm(host, 'demo-%s' % host)
            bed.register(vm, project='demo')
    except BaseException:
        bed.stop()
        raise
    with open(os.path.join(args.root, 'demo.env'), 'w') as f:
        f.write('export LIVESNAP_URL=%s LIVESNAP_TOKEN=%s\n'
                % (bed.base_url, demo))
    cli = os.path.join(os.path.dirname(sys.executable), 'livesnap')
    print('''
================================================================================
livesnap runs on %(n)d hosts: network namespaces %(hosts)s on bridge %(br)s
(%(addr)s/24), one livesnap-agent in each; the conductor, RabbitMQ
(%(rabbit)s) and PostgreSQL (%(pg)s) outside.  REST API %(url)s.
A demo VM on each host, registered as servers %(servers)s of project demo.

  source %(root)s/demo.env
  %(cli)s server list
  %(cli)s snapshot create demo-hv1 --disk vda --name s1 --wait
  %(cli)s snapshot list demo-hv1 --tree

Cut a host off and bring it back (its servers answer 503 meanwhile):
  ip link set %(veth)s down      # hv1's link
  ip link set %(veth)s up
Run a command on a host:  ip netns exec hv1 ip addr
Admin token: %(admin)s
Logs: %(root)s/*.log''' % {
        'n': len(bed.hosts), 'hosts': ', '.join(bed.hosts), 'br': bed.bridge,
        'addr': bed.address, 'rabbit': bed.rabbit.url,
        'pg': bed.database_url, 'url': bed.base_url,
        'servers': ', '.join('demo-' + h for h in bed.hosts),
        'root': args.root, 'cli': cli, 'veth': bed.veths[bed.hosts[0]],
        'admin': admin})
    if args.detach:
        print('Stop it with: tools/run --stop%s\n%s' % (
            args.stop_hint, '=' * 80))
        return 0
    print('Press Ctrl-C to stop it.\n' + '=' * 80)
    try:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        while all(p.poll() is None for p in bed.procs.values()):
            time.sleep(1)
        print('hostbed: a process exited on its own; see the logs in %s'
              % args.root, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print('hostbed: stopping')
        bed.stop()


def _demo_stop(args):
    path = os.path.join(args.root, 'bed.json')
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        print('hostbed: no host bed in %s' % args.root)
        return 0
    teardown(record)
    os.unlink(path)
    print('hostbed: stopped the hosts of %s' % args.root)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m livesnap_tools.hostbed',
                                description='The several-hosts demo.')
    p.add_argument('action', choices=('demo', 'stop'))
    p.add_argument('--hosts', type=int, default=3)
    p.add_argument('--root', required=True, help='state directory')
    p.add_argument('--port', type=int, default=8780)
    p.add_argument('--net', default=None, help='10.77.X (default: free one)')
    p.add_argument('--detach', action='store_true')
    p.add_argument('--debug', action='store_true')
    p.add_argument('--stop-hint', default='')
    args = p.parse_args(argv)
    args.root = os.path.abspath(args.root)
    if args.action == 'stop':
        return _demo_stop(args)
    if args.hosts < 1:
        p.error('--hosts must be at least 1')
    why = unavailable()
    if why:
        print('hostbed: cannot run the host bed: %s' % why, file=sys.stderr)
        return 1
    if os.path.exists(os.path.join(args.root, 'bed.json')):
        with open(os.path.join(args.root, 'bed.json')) as f:
            if json.load(f).get('namespaces'):
                print('hostbed: a host bed already runs in %s; stop it with '
                      'tools/run --stop%s' % (args.root, args.stop_hint),
                      file=sys.stderr)
                return 1
    os.makedirs(args.root, exist_ok=True)
    return _demo_start(args)


if __name__ == '__main__':
    sys.exit(main())
