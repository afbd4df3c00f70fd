"""Test harness: configuration overrides, service probes and deployments.

``InProcessDeployment`` runs the conductor (RPC server and HTTP API) and an
agent in the test's own process over ``kombu+memory:////``.
``ProcessDeployment`` starts ``livesnap-conductor`` and ``livesnap-agent``
as real processes with a generated config file, e.g. over RabbitMQ.
Both expose the same ``api()`` helper, so one scenario runs on either.
Both take ``host_keys=True`` to run with per-host keys (:func:`make_host_keys`;
the agent signs, the conductor requires signatures).
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

from oslo_config import cfg

from livesnap import conf as _conf  # noqa: F401  (registers the options)

CONF = cfg.CONF
RABBIT_URL = 'rabbit://guest:guest@127.0.0.1:5672/'

TOKENS = {
    'admin-token': {'project_id': 'admin', 'roles': ['admin']},
    'p1-token': {'project_id': 'p1', 'roles': ['member']},
    'p2-token': {'project_id': 'p2', 'roles': ['member']},
}
HOST = 'hv1'


def make_host_keys(tmp_path, hosts=(HOST,)):
    """Make a key per host as an operator would: ``keys/<host>`` for the
    conductors' ``[conductor] host_keys_dir`` and ``<host>.key`` for each
    agent's ``[agent] host_key_file``.

    :returns: (the keys directory, {host: its agent's key file})
    """
    from livesnap import hostkeys
    directory = tmp_path / 'keys'
    directory.mkdir(mode=0o700, exist_ok=True)
    files = {}
    for host in hosts:
        key = hostkeys.generate()
        (directory / host).write_text(key + '\n')
        files[host] = tmp_path / ('%s.key' % host)
        files[host].write_text(key + '\n')
    return directory, files


def _port_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def postgres_available():
    return _port_open('127.0.0.1', 5432)


def mariadb_available():
    if not _port_open('127.0.0.1', 3306):
        return False
    try:
        mysql_admin('SELECT 1')
    except Exception:
        return False
    return True


def rabbit_available():
    return _port_open('127.0.0.1', 5672)


def rabbit_add_vhost():
    """A new vhost on the local RabbitMQ with guest's permissions."""
    name = 'livesnap-test-' + uuid.uuid4().hex[:10]
    subprocess.run(['rabbitmqctl', '-q', 'add_vhost', name], check=True,
                   capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    try:
        subprocess.run(['rabbitmqctl', '-q', 'set_permissions', '-p', name,
                        'guest', '.*', '.*', '.*'], check=True,
                       capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    except BaseException:
        rabbit_delete_vhost(name)
        raise
    return name


def rabbit_delete_vhost(name):
    subprocess.run(['rabbitmqctl', '-q', 'delete_vhost', name],
                   capture_output=True, timeout=60)


def pg_admin(sql):
    import psycopg2
    conn = psycopg2.connect(host='127.0.0.1', user='postgres', dbname='test')
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def pg_reset_schema(url):
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql('DROP SCHEMA public CASCADE')
        c.exec_driver_sql('CREATE SCHEMA public')
    engine.dispose()


def mysql_admin(sql):
    import pymysql
    conn = pymysql.connect(host='127.0.0.1', port=3306, user='root',
                           password='', autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def mysql_reset_schema(url):
    """Drop every table of the database ``url`` names."""
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(bind=engine)
        with engine.begin() as c:
            c.exec_driver_sql('SET FOREIGN_KEY_CHECKS = 0')
            for table in meta.sorted_tables:
                c.exec_driver_sql('DROP TABLE IF EXISTS `%s`' % table.name)
            c.exec_driver_sql('DROP TABLE IF EXISTS alembic_version')
            c.exec_driver_sql('SET FOREIGN_KEY_CHECKS = 1')
    finally:
        engine.dispose()


def stop_processes(procs, timeout):
    """Stop processes: SIGTERM to every one still running, then wait.

    A process still running ``timeout`` seconds after its SIGTERM is
    killed.  Safe to repeat on processes that have ended.

    :param procs: :class:`subprocess.Popen` objects.
    :param timeout: seconds to wait for each process after the SIGTERMs.
    """
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class ConfFixture(object):
    """set_override with automatic clean-up."""

    def __init__(self):
        self._overrides = []

    def set(self, name, value, group=None):
        CONF.set_override(name, value, group=group)
        self._overrides.append((name, group))

    def cleanup(self):
        for name, group in reversed(self._overrides):
            CONF.clear_override(name, group=group)
        self._overrides = []


class FakeConductor(object):
    """Records the reports an agent's TaskRunner sends (unit tests)."""

    def __init__(self):
        self.reports = []
        self.hosts = []

    def report_operation(self, ctxt, operation_id, report, host=None):
        self.reports.append((operation_id, report))
        self.hosts.append(host)

    def report_progress(self, ctxt, operation_id, progress, steps=None):
        pass


def api_error(dep, method, path, body=None, token='p1-token', raw=None):
    """Send a request that must fail; check the JSON error shape (and that
    no trace leaks) and return ``(status, error code)``.
    """
    status, payload = dep.api(method, path, body, token, raw=raw)
    assert isinstance(payload, dict) and set(payload) == {'error'}, payload
    assert set(payload['error']) == {'code', 'message'}
    assert 'Traceback' not in payload['error']['message']
    return status, payload['error']['code']


class APIError(Exception):

    def __init__(self, status, body):
        self.status = status
        self.body = body
        super().__init__('HTTP %s: %s' % (status, body))


class APIClientMixin(object):
    """``api(method, path, body, token)`` -> (status, json) over HTTP."""

    base_url = None

    def api(self, method, path, body=None, token='p1-token', raw=None):
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data,
                                     method=method)
        if token:
            req.add_header('X-Auth-Token', token)
        if data is not None:
            req.add_header('Content-Type', 'application/json')
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b'null')
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                return exc.code, json.loads(payload)
            except ValueError:
                return exc.code, payload.decode(errors='replace')

    def ok(self, method, path, body=None, token='p1-token', status=None):
        code, payload = self.api(method, path, body, token)
        if code >= 400 or (status is not None and code != status):
            raise APIError(code, payload)
        return payload

    def wait_operation(self, op_id, token='p1-token', timeout=60):
        """Poll until the operation ends; return its final record."""
        deadline = time.monotonic() + timeout
        while True:
            op = self.ok('GET', '/v1/operations/%s' % op_id,
                         token=token)['operation']
            if op['status'] in ('succeeded', 'failed'):
                return op
            if time.monotonic() > deadline:
                raise AssertionError('operation %s still %s after %ss'
                                     % (op_id, op['status'], timeout))
            time.sleep(0.05)

    def wait_host_alive(self, timeout=30):
        """Block until the agent's first heartbeat has been recorded."""
        from conductor.db import api as db
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with db.transaction() as s:
                if db.host_is_alive(s, HOST):
                    return
            time.sleep(0.05)
        raise AssertionError('agent on %s never sent a heartbeat' % HOST)

    def register_server(self, server_id, image, qmp_socket=None,
                        project='p1', host=HOST, disk='vda'):
        return self.ok('POST', '/v1/servers', {'server': {
            'id': server_id, 'name': server_id, 'project_id': project,
            'host': host, 'qmp_socket': qmp_socket,
            'disks': [{'name': disk, 'path': image}]}},
            token='admin-token', status=201)['server']


class InProcessDeployment(APIClientMixin):

    def __init__(self, conf, tmp_path, transport_url='kombu+memory:////',
                 host_keys=False):
        self.conf = conf
        self.tmp_path = tmp_path
        self.image_dir = str(tmp_path / 'images')
        os.makedirs(self.image_dir, exist_ok=True)
        token_file = tmp_path / 'tokens.json'
        token_file.write_text(json.dumps(TOKENS))
        conf.set('transport_url', transport_url)
        conf.set('control_exchange', 'livesnap-test-' + uuid.uuid4().hex[:8])
        conf.set('state_path', str(tmp_path / 'state'))
        conf.set('token_file', str(token_file), group='api')
        conf.set('port', 0, group='api')
        conf.set('host', HOST, group='agent')
        conf.set('image_dirs', [self.image_dir], group='agent')
        conf.set('heartbeat_interval', 0.5, group='agent')
        if host_keys:
            keys_dir, key_files = make_host_keys(tmp_path)
            conf.set('host_keys_dir', str(keys_dir), group='conductor')
            conf.set('require_host_keys', True, group='conductor')
            conf.set('host_key_file', str(key_files[HOST]), group='agent')
        self.conductor = None
        self.agent = None

    def start(self, agent=True):
        from conductor import service as conductor_service
        from livesnap import rpc
        rpc.cleanup()
        self.conductor = conductor_service.ConductorService()
        self.conductor.start()
        self.base_url = 'http://127.0.0.1:%d' % self.conductor.api_server.port
        if agent:
            self.start_agent()

    def start_agent(self):
        from agent import service as agent_service
        self.agent = agent_service.AgentService()
        self.agent.start()
        self.wait_host_alive()

    def stop(self):
        from livesnap import rpc
        if self.agent is not None:
            self.agent.stop()
        if self.conductor is not None:
            self.conductor.stop()
        rpc.cleanup()


@contextlib.contextmanager
def running(dep):
    """Start ``dep``; on any failure print its processes' logs; stop it."""
    try:
        dep.start()
        yield dep
    except BaseException:
        for name in dep.procs:
            print('--- %s log ---\n%s' % (name, dep.log(name)))
        raise
    finally:
        dep.stop()


class ProcessDeployment(APIClientMixin):
    """Conductor and agent as separate OS processes."""

    def __init__(self, tmp_path, transport_url, database_url, extra='',
                 tokens=None, host_keys=False):
        self.tmp_path = tmp_path
        self.transport_url = transport_url
        self.control_exchange = 'livesnap-test-' + uuid.uuid4().hex[:8]
        self.image_dir = str(tmp_path / 'images')
        os.makedirs(self.image_dir, exist_ok=True)
        self.port = free_port()
        self.base_url = 'http://127.0.0.1:%d' % self.port
        self.database_url = database_url
        token_file = tmp_path / 'tokens.json'
        token_file.write_text(json.dumps(dict(TOKENS, **(tokens or {}))))
        self.config_file = tmp_path / 'livesnap.conf'
        self.config_file.write_text(
            '[DEFAULT]\ntransport_url = %s\ncontrol_exchange = %s\n'
            'state_path = %s\n'
            '[api]\nport = %d\ntoken_file = %s\n'
            '[database]\nconnection = %s\n'
            '[agent]\nhost = %s\nimage_dirs = %s\nheartbeat_interval = 0.5\n'
            % (transport_url, self.control_exchange,
               tmp_path / 'state', self.port, token_file, database_url,
               HOST, self.image_dir) + self._host_keys_conf(host_keys)
            + extra)
        self.procs = {}

    def _host_keys_conf(self, host_keys):
        self.host_keys_dir = self.host_key_files = None
        if not host_keys:
            return ''
        self.host_keys_dir, self.host_key_files = make_host_keys(
            self.tmp_path)
        return ('host_key_file = %s\n[conductor]\nhost_keys_dir = %s\n'
                'require_host_keys = true\n'
                % (self.host_key_files[HOST], self.host_keys_dir))

    def _spawn(self, name, module, override=''):
        log = open(self.tmp_path / ('%s.log' % name), 'a')
        args = [sys.executable, '-m', module, '--config-file',
                str(self.config_file)]
        if override:
            extra = self.tmp_path / ('%s.conf' % name)
            extra.write_text(override)
            args += ['--config-file', str(extra)]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start(self):
        self.start_conductor()
        self.start_agent()

    def kill(self, name, sig=9):
        """Send ``sig`` to a process and wait for it to end."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        proc.wait(timeout=60)

    def wait_exit(self, name, timeout=60):
        """Wait for a process to end by itself; returns its exit code."""
        return self.procs[name].wait(timeout=timeout)

    def start_conductor(self, name='conductor', port=None, fault_points=()):
        port = port or self.port
        self._spawn(name, 'conductor.service',
                    '[api]\nport = %d\n[conductor]\nhost = %s\n'
                    'fault_points = %s\n'
                    % (port, name, ','.join(fault_points)))
        deadline = time.monotonic() + 60
        while not _port_open('127.0.0.1', port):
            if self.procs[name].poll() is not None:
                raise RuntimeError('conductor exited: %s' % self.log(name))
            if time.monotonic() > deadline:
                raise RuntimeError('conductor did not listen: %s'
                                   % self.log(name))
            time.sleep(0.1)

    def start_agent(self, name='agent', fault_points=()):
        self._spawn(name, 'agent.service',
                    '[agent]\nfault_points = %s\n' % ','.join(fault_points)
                    if fault_points else '')
        deadline = time.monotonic() + 60
        since = time.time() - 0.5
        while True:
            if self._host_alive(since):
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError('agent exited: %s' % self.log(name))
            if time.monotonic() > deadline:
                raise RuntimeError('agent never sent a heartbeat: %s'
                                   % self.log(name))
            time.sleep(0.1)

    def _host_alive(self, since):
        """True once the agent has sent a heartbeat after ``since``."""
        import datetime
        import sqlalchemy as sa
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as c:
                row = c.execute(sa.text(
                    'SELECT last_heartbeat FROM hosts WHERE name = :h'),
                    {'h': HOST}).first()
                if row is None:
                    return False
                value = row[0]
                if isinstance(value, str):  # SQLite through a text query
                    value = datetime.datetime.fromisoformat(value)
                return value >= datetime.datetime.utcfromtimestamp(since)
        except sa.exc.SQLAlchemyError:
            return False
        finally:
            engine.dispose()

    def log(self, name):
        try:
            return (self.tmp_path / ('%s.log' % name)).read_text()[-4000:]
        except OSError:
            return ''

    def stop(self):
        stop_processes(self.procs.values(), timeout=20)
