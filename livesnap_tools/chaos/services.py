"""Private services the chaos run may break: its own PostgreSQL cluster,
its own RabbitMQ node and a small filesystem for one host's images.

The machine's PostgreSQL (5432) and RabbitMQ (5672) are shared with other
users; the chaos run restarts its database and broker, so it runs its own
on free ports, in directories of its own, and removes them at the end.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

PG_BIN = '/usr/lib/postgresql/15/bin'


class ServiceError(Exception):
    pass


def _as_postgres(cmd):
    """Run ``cmd`` as the ``postgres`` user when we are root (initdb and
    the server refuse to run as root).
    """
    if os.geteuid() == 0:
        return ['runuser', '-u', 'postgres', '--'] + cmd
    return cmd


class PrivatePostgres(object):
    """A PostgreSQL cluster in a temporary directory, on ``port``.

    :param host: the address it listens on and is reached at.
    :param allow: networks (CIDR) besides loopback whose clients it trusts.
    """

    def __init__(self, port, host='127.0.0.1', allow=()):
        self.port = port
        self.host = host
        self.allow = list(allow)
        self.dir = tempfile.mkdtemp(prefix='ls-chaos-pg-')
        self.data = os.path.join(self.dir, 'data')
        self.logfile = os.path.join(self.dir, 'postgres.log')
        if os.geteuid() == 0:
            user = pwd.getpwnam('postgres')
            os.chown(self.dir, user.pw_uid, user.pw_gid)

    def url(self, dbname):
        return 'postgresql+psycopg2://postgres@%s:%d/%s' % (
            self.host, self.port, dbname)

    def _run(self, cmd, timeout=120):
        proc = subprocess.run(_as_postgres(cmd), capture_output=True,
                              text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ServiceError('%s failed (%d): %s %s' % (
                ' '.join(cmd[:2]), proc.returncode, proc.stdout[-500:],
                proc.stderr[-500:]))
        return proc

    def start(self):
        if not os.path.exists(self.data):
            self._run([os.path.join(PG_BIN, 'initdb'), '-D', self.data,
                       '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
                       '--no-sync'])
            with open(os.path.join(self.data, 'pg_hba.conf'), 'a') as f:
                for net in self.allow:
                    f.write('host all all %s trust\n' % net)
        self._run([os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-l',
                   self.logfile, '-w', '-t', '60', '-o',
                   '-p %d -k %s -c listen_addresses=%s '
                   '-c max_connections=300 -c fsync=off'
                   % (self.port, self.dir, self.host), 'start'])

    def stop(self, mode='fast'):
        if os.path.exists(os.path.join(self.data, 'postmaster.pid')):
            self._run([os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data,
                       '-m', mode, '-w', '-t', '60', 'stop'])

    def restart(self):
        """Stop (fast: connections are cut) and start again."""
        self.stop('fast')
        self.start()

    def create_database(self, name):
        import psycopg2
        conn = psycopg2.connect(host=self.host, port=self.port,
                                user='postgres', dbname='postgres')
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute('CREATE DATABASE %s' % name)
        finally:
            conn.close()

    def destroy(self):
        try:
            self.stop('immediate')
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def private_rabbit(port, dist_port):
    """A private RabbitMQ node (livesnap_tools/broker.py's), not yet
    started.
    """
    from livesnap_tools import broker
    if not broker.available():
        raise ServiceError('rabbitmq-server is not installed')
    return broker.PrivateRabbit(port, dist_port)


class SmallDisk(object):
    """A tmpfs of ``size`` bytes mounted on ``path`` (an image directory),
    which :meth:`fill` fills with a ballast file, leaving ``leave`` bytes.
    """

    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.ballast = os.path.join(path, '.chaos-ballast')
        self.mounted = False

    def mount(self):
        os.makedirs(self.path, exist_ok=True)
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d' % self.size,
                        'chaos-images', self.path], check=True,
                       capture_output=True, timeout=30)
        self.mounted = True

    def free(self):
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave=64 * 1024):
        """Fill the filesystem but ``leave`` bytes; returns bytes taken."""
        want = max(0, self.free() - leave)
        with open(self.ballast, 'ab') as f:
            try:
                os.posix_fallocate(f.fileno(), 0, want)
            except OSError:
                pass
        return want

    def empty(self):
        try:
            os.unlink(self.ballast)
        except FileNotFoundError:
            pass

    def unmount(self):
        if not self.mounted:
            return
        for _ in range(20):
            proc = subprocess.run(['umount', self.path], capture_output=True,
                                  timeout=30)
            if proc.returncode == 0:
                self.mounted = False
                return
            time.sleep(0.5)
        subprocess.run(['umount', '-l', self.path], capture_output=True,
                       timeout=30)
        self.mounted = False


def can_mount():
    return os.geteuid() == 0 and shutil.which('mount') is not None
