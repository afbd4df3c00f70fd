"""``livesnap-agent``: one per hypervisor host.

Listens on topic ``livesnap-agent`` with ``server=[agent] host`` and sends
a heartbeat to the conductors every ``[agent] heartbeat_interval`` seconds.
Other threads re-send the reports the conductor has not acknowledged
(``[agent] report_resend_interval``) and prune the journal's archive
(``[agent] journal_retention``).
"""

import logging
import os
import sys
import threading
import time

from oslo_config import cfg

from agent import driver as driver_mod
from agent import exception
from agent import journal as journal_mod
from agent import manager
from agent import metrics as agent_metrics
from agent import recovery
from agent import rpcapi as agent_rpcapi
from agent import task_runner
from conductor import rpcapi as conductor_rpcapi
from livesnap import context
from livesnap import hostkeys
from livesnap import metrics
from livesnap import rpc
from livesnap import service as common_service
from livesnap import version

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: Seconds between two prunings of the journal's archive.
PRUNE_INTERVAL = 600.0

#: Testing only: the agent serves and reports this older agent RPC API
#: version instead of its own, to test rolling upgrades.
TEST_RPC_VERSION_ENV = 'LIVESNAP_TEST_AGENT_RPC_VERSION'


class AgentService(object):
    """The agent's RPC server and heartbeat loop."""

    def __init__(self, host=None):
        self.host = host or CONF.agent.host
        signer = None
        if CONF.agent.host_key_file:
            signer = hostkeys.Signer(self.host, CONF.agent.host_key_file)
        self.conductor_api = conductor_rpcapi.ConductorAPI(signer=signer)
        self.driver = driver_mod.load(
            CONF.agent.driver, CONF.agent.image_dirs, conf=CONF)
        self.driver.init_host(self.host)
        self.journal = journal_mod.Journal(CONF.agent.journal_dir)
        self.runner = task_runner.TaskRunner(
            self.driver, self.journal, self.conductor_api, self.host,
            resend_interval=CONF.agent.report_resend_interval,
            progress_interval=CONF.agent.progress_interval,
            thaw_retry_timeout=CONF.agent.thaw_retry_timeout)
        self.manager = manager.AgentManager(self.runner)
        self.rpc_version = os.environ.get(TEST_RPC_VERSION_ENV)
        if self.rpc_version:
            # Testing only: serve (and report) an older API, as an agent
            # not yet upgraded would.
            LOG.warning('Serving agent RPC API %(version)s only (%(env)s)',
                        {'version': self.rpc_version,
                         'env': TEST_RPC_VERSION_ENV})
            self.manager.target = rpc.messaging.Target(
                version=self.rpc_version)
        else:
            self.rpc_version = agent_rpcapi.RPC_API_VERSION
        self._stop = threading.Event()
        self._heartbeat_thread = None
        self._recovery_thread = None
        self._reports_thread = None
        self.server = None
        self.started_at = None
        self.metrics_server = None
        self._journal_metrics = None

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
        self._reports_thread = threading.Thread(
            target=self._reports_loop, name='reports', daemon=True)
        self._reports_thread.start()
        threading.Thread(target=self._prune_loop, name='prune',
                         daemon=True).start()
        self._journal_metrics = agent_metrics.register_journal(
            self.host, self.journal)
        self.metrics_server = metrics.serve(CONF.metrics.agent_port)
        LOG.info('Agent for host %(host)s started; driver %(driver)s, '
                 'image dirs %(dirs)s',
                 {'host': self.host, 'driver': self.driver.name,
                  'dirs': CONF.agent.image_dirs})

    def _recover(self):
        try:
            resumed, replayed = recovery.recover(self.runner)
        except Exception:
            LOG.exception('Journal replay failed')
            return
        if resumed or replayed:
            LOG.warning('Journal replay: %(resumed)d VM(s) resumed, '
                        '%(replayed)d operation(s) finished',
                        {'resumed': resumed, 'replayed': replayed})

    def _reports_loop(self):
        """Re-send the reports the conductor has not acknowledged; run
        again an operation whose task died.
        """
        while not self._stop.wait(CONF.agent.report_resend_interval):
            if not self.runner.recovered.is_set():
                continue  # the start-up replay does both first
            try:
                self.runner.resend_due(context.make())
                self.runner.rerun_dead()
            except Exception:
                LOG.exception('Re-sending unacknowledged reports failed')

    def _prune_loop(self):
        """Remove expired archived entries, now and then (it may take a
        while on a host with a long history: never in the way of the
        replay or the re-sends).
        """
        self.runner.recovered.wait()
        while not self._stop.is_set():
            self.prune()
            self._stop.wait(PRUNE_INTERVAL)

    def prune(self):
        """Remove archived journal entries older than the retention."""
        try:
            moved = self.journal.archive_legacy()
            if moved:
                LOG.info('Archived %(n)d journal entries of operations '
                         'that ended before this version', {'n': moved})
            removed = self.journal.prune(CONF.agent.journal_retention)
        except (OSError, exception.AgentError):
            LOG.exception('Pruning the journal failed')
            return 0
        if removed:
            LOG.info('Pruned %(n)d acknowledged journal entries',
                     {'n': removed})
        return removed

    def heartbeat(self):
        info = {'version': version.VERSION,
                'rpc_version': self.rpc_version,
                'image_dirs': list(CONF.agent.image_dirs),
                'driver': self.driver.name,
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
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self._journal_metrics is not None:
            agent_metrics.unregister(self._journal_metrics)
        if self.server is not None:
            self.server.stop()
            self.server.wait()
        for thread in (self._heartbeat_thread, self._reports_thread):
            if thread is not None:
                thread.join(timeout=5)


def main(argv=None):
    return common_service.serve('livesnap-agent', [AgentService], argv)


if __name__ == '__main__':
    sys.exit(main())
