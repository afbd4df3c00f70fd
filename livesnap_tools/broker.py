"""A private RabbitMQ node for tests that restart the broker.

The machine's own RabbitMQ (127.0.0.1:5672) is shared; a test that stops
and starts a broker runs its own node on another port, with its own
Mnesia and log directories.
"""

import os
import shutil
import subprocess
import tempfile

import pwd


class PrivateRabbit(object):

    def __init__(self, port, dist_port=None):
        self.port = port
        self.dist_port = dist_port or port + 1
        self.node = 'lstest%d@localhost' % port
        self.dir = tempfile.mkdtemp(prefix='ls-rabbit-')
        try:
            user = pwd.getpwnam('rabbitmq')
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        except KeyError:
            pass
        self.pidfile = os.path.join(self.dir, 'pid')

    @property
    def url(self):
        return 'rabbit://guest:guest@127.0.0.1:%d/' % self.port

    def _env(self):
        env = dict(os.environ)
        env.update({
            'RABBITMQ_NODE_PORT': str(self.port),
            'RABBITMQ_NODENAME': self.node,
            'RABBITMQ_DIST_PORT': str(self.dist_port),
            'RABBITMQ_MNESIA_BASE': os.path.join(self.dir, 'mnesia'),
            'RABBITMQ_LOG_BASE': os.path.join(self.dir, 'log'),
            'RABBITMQ_PID_FILE': self.pidfile,
            'RABBITMQ_ENABLED_PLUGINS_FILE': os.path.join(self.dir,
                                                          'plugins'),
            'RABBITMQ_CONFIG_FILE': os.path.join(self.dir, 'rabbitmq'),
        })
        return env

    def start(self, timeout=60):
        subprocess.run(['rabbitmq-server', '-detached'], env=self._env(),
                       check=True, capture_output=True, timeout=timeout)
        subprocess.run(['rabbitmqctl', '-n', self.node, 'wait',
                        self.pidfile, '--timeout', str(timeout)],
                       env=self._env(), check=True, capture_output=True,
                       timeout=timeout + 10)

    def stop(self, timeout=60):
        subprocess.run(['rabbitmqctl', '-n', self.node, 'stop',
                        self.pidfile], env=self._env(),
                       capture_output=True, timeout=timeout)

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def available():
    return shutil.which('rabbitmq-server') is not None
