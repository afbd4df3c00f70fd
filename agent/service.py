"""``livesnap-agent``: one per hypervisor host.

Listens on topic ``livesnap-agent`` with ``server=[agent] host`` and sends
a heartbeat to the conductors every ``[agent] heartbeat_interval`` seconds.
"""

import logging
import sys
import threading
import time

from oslo_config import cfg

from agent.driver import qemu
from agent import journal as journal_mod
from agent import manager
from agent import recovery
from agent import tasks
from conductor import rpcapi as conductor_rpcapi
from livesnap import context
from livesnap import rpc
from livesnap import service as common_service
from livesnap import version

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class AgentService(object):
    """The agent's RPC server and heartbeat loop."""

    def __init__(self, host=None):
        self.host = host or CONF.agent.host
        self.conductor_api = conductor_rpcapi.ConductorAPI()
        self.driver = qemu.QemuDriver(
            CONF.agent.image_dirs,
            pause_deadline=CONF.agent.pause_deadline,
            resume_retries=CONF.agent.resume_retries,
            qmp_timeout=CONF.agent.qmp_timeout,
            job_timeout=CONF.agent.merge_timeout,
            reserved_bytes=CONF.agent.reserved_space_mb * 1024 * 1024)
        self.journal = journal_mod.Journal(CONF.agent.journal_dir)
        self.runner = tasks.TaskRunner(self.driver, self.journal,
                                       self.conductor_api, self.host)
        self.manager = manager.AgentManager(self.runner)
        self._stop = threading.Event()
        self._heartbeat_thread = None
        self._recovery_thread = None
        self.server = None
        self.started_at = None

    def start(self):
        target = rpc.messaging.Target(topic=rpc.AGENT_TOPIC, server=self.host)
        self.server = rpc.get_server(target, [self.manager])
        self.server.start()
        self.started_at = time.time()
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat_loop, name='heartbeat', daemon=True)
        self._heartbeat_thread.start()
        # Resume and finish whatever a previous run of the agent left.
        self._recovery_thread = threading.Thread(
            target=self._recover, name='recovery', daemon=True)
        self._recovery_thread.start()
        LOG.info('Agent for host %(host)s started; image dirs %(dirs)s',
                 {'host': self.host, 'dirs': CONF.agent.image_dirs})

    def _recover(self):
        try:
            resumed, replayed = recovery.recover(
                self.runner, qmp_timeout=CONF.agent.qmp_timeout)
        except Exception:
            LOG.exception('Journal replay failed')
            return
        if resumed or replayed:
            LOG.warning('Journal replay: %(resumed)d VM(s) resumed, '
                        '%(replayed)d operation(s) finished',
                        {'resumed': resumed, 'replayed': replayed})

    def heartbeat(self):
        info = {'version': version.VERSION,
                'image_dirs': list(CONF.agent.image_dirs),
                'started_at': self.started_at}
        self.conductor_api.heartbeat(context.make(), self.host, info)

    def _heartbeat_loop(self):
        while not self._stop.is_set():
            try:
                self.heartbeat()
            except Exception:
                LOG.warning('Heartbeat from %(host)s not sent',
                            {'host': self.host}, exc_info=True)
            self._stop.wait(CONF.agent.heartbeat_interval)

    def stop(self):
        self._stop.set()
        if self.server is not None:
            self.server.stop()
            self.server.wait()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=5)


def main(argv=None):
    return common_service.serve('livesnap-agent', [AgentService], argv)


if __name__ == '__main__':
    sys.exit(main())
