"""The chaos run's fault injector: one thread, one fault at a time, at
random intervals drawn from a seeded generator (the same ``--seed`` gives
the same sequence of kinds and gaps; what the faults hit also depends on
timing).

Every fault undoes itself before the next one starts (a killed agent or
conductor is started again, the broker and the database come back, the
ballast is removed, a killed QEMU is booted again on its disk's current
active image once the disk is free), so after :meth:`Injector.stop` the
deployment is whole again.
"""

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

from livesnap_tools.bench_load import cluster as cluster_mod
from livesnap_tools.chaos import lose

LOG = logging.getLogger('livesnap.chaos')

#: kind -> weight of the draw; the costly ones (broker, database) rarer
KINDS = {
    'kill_agent': 5,
    'kill_conductor': 3,
    'restart_rabbitmq': 1,
    'restart_postgresql': 1,
    'kill_qemu_mid_merge': 2,
    'image_dir_full': 2,
    'slow_disk': 3,
    'duplicate_task': 3,
    'lose_task': 3,
    'restart_libvirtd': 2,
}
#: kinds only the libvirt driver has
LIBVIRT_ONLY = ('restart_libvirtd',)
#: kinds cheap enough for the short run inside the test suite
CHEAP = ('kill_agent', 'kill_conductor', 'kill_qemu_mid_merge',
         'image_dir_full', 'slow_disk', 'duplicate_task', 'lose_task')


class Injector(object):
    """Injects faults into a running chaos deployment (see
    :mod:`livesnap_tools.chaos.run` for ``env``).
    """

    def __init__(self, env, seed, kinds, gap=(0.5, 3.0)):
        self.env = env
        self.rng = random.Random(seed)
        self.kinds = {k: w for k, w in KINDS.items() if k in kinds}
        self.gap = gap
        self.counts = {k: 0 for k in self.kinds}
        self.skipped = {k: 0 for k in self.kinds}
        self.errors = []
        self.log = []
        self.last_fault_end = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='injector',
                                        daemon=True)

    def start(self):
        self._thread.start()

    def stop(self, timeout=300):
        """Stop injecting; wait for the fault in progress and for killed
        QEMUs to be booted again.
        """
        self._stop.set()
        self._thread.join(timeout)
        for t in list(self.env.boots):
            t.join(timeout)

    def _loop(self):
        kinds = sorted(self.kinds)
        weights = [self.kinds[k] for k in kinds]
        while not self._stop.wait(self.rng.uniform(*self.gap)):
            kind = self.rng.choices(kinds, weights)[0]
            t0 = time.time()
            try:
                done = getattr(self, '_' + kind)()
            except Exception as exc:  # noqa - reported in the table
                LOG.exception('fault %s failed', kind)
                self.errors.append('%s: %s' % (kind, exc))
                done = False
            if done:
                self.counts[kind] += 1
                self.last_fault_end = time.time()
                self.log.append((t0, kind, round(time.time() - t0, 2)))
                print('chaos: %6.1f s  fault %-20s (%.1f s)'
                      % (t0 - self.env.t_start, kind, time.time() - t0),
                      file=sys.stderr)
            else:
                self.skipped[kind] += 1

    # -- the faults -------------------------------------------------------
    def _kill_agent(self):
        cl = self.env.cluster
        host = self.rng.choice(cl.hosts)
        name = 'agent-' + host
        cl.procs[name].send_signal(signal.SIGKILL)
        cl.procs[name].wait()
        time.sleep(self.rng.uniform(0.2, 2.0))
        cl.respawn(name)
        return True

    def _kill_conductor(self):
        cl = self.env.cluster
        names = sorted(n for n in cl.procs if n.startswith('conductor'))
        name = self.rng.choice(names)
        cl.procs[name].send_signal(signal.SIGKILL)
        cl.procs[name].wait()
        time.sleep(self.rng.uniform(0.2, 1.5))
        cl.respawn(name)
        self.env.wait_conductor(name)
        return True

    def _restart_rabbitmq(self):
        self.env.rabbit.restart()
        return True

    def _restart_postgresql(self):
        self.env.postgres.restart()
        return True

    def _busy_vms(self, action=None):
        return [w for w in self.env.workers
                if w.current and (action is None or w.current == action)
                and self.env.vm_state[w.name]['up'].is_set()]

    def _kill_qemu_mid_merge(self):
        """Kill the QEMU of a VM with a merge (else any operation) in
        flight; once its disk is free, boot a QEMU on its active image.
        """
        busy = self._busy_vms('delete') or self._busy_vms()
        if not busy:
            return False
        worker = self.rng.choice(busy)
        state = self.env.vm_state[worker.name]
        spec = self.env.spec(worker.name)
        if not state['lock'].acquire(timeout=10):
            return False
        try:
            state['up'].clear()
            os.kill(spec['vm'].pid, signal.SIGKILL)
        finally:
            state['lock'].release()
        self.env.qemu_killed.append(worker.name)

        def boot():
            try:
                self.env.boot_again(worker.name)
            except Exception as exc:  # noqa - reported in the table
                self.errors.append('boot %s again: %s' % (worker.name, exc))
            finally:
                state['up'].set()
        # the disk may stay locked a while: keep injecting meanwhile
        t = threading.Thread(target=boot, name='boot-' + worker.name,
                             daemon=True)
        t.start()
        self.env.boots.append(t)
        return True

    def _image_dir_full(self):
        disk = self.env.small_disk
        if disk is None:
            return False
        disk.fill()
        try:
            time.sleep(self.rng.uniform(2.0, 6.0))
        finally:
            disk.empty()
        return True

    def _slow_disk(self):
        """SIGSTOP a VM's QEMU (one with an operation in flight if any) for
        a few hundred ms: its disk and monitor stall, then go on.
        """
        busy = self._busy_vms() or [w for w in self.env.workers
                                    if self.env.vm_state[w.name][
                                        'up'].is_set()]
        if not busy:
            return False
        worker = self.rng.choice(busy)
        state = self.env.vm_state[worker.name]
        if not state['lock'].acquire(timeout=10):
            return False
        try:
            if not state['up'].is_set():
                return False
            pid = self.env.spec(worker.name)['vm'].pid
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(self.rng.uniform(0.1, 0.8))
            finally:
                os.kill(pid, signal.SIGCONT)
        finally:
            state['lock'].release()
        return True

    def _duplicate_task(self):
        """Send an operation's task to its agent a second time (one in
        flight if any, else the latest), as the conductor sends it.
        """
        op_id = self.env.pick_operation(self.rng)
        if op_id is None:
            return False
        proc = subprocess.run(
            [sys.executable, '-m', 'livesnap_tools.chaos.resend',
             '--config-file', str(self.env.cluster.config_file),
             '--operation', op_id],
            capture_output=True, text=True, timeout=60,
            stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise cluster_mod.ClusterError('resend: %s' % proc.stderr[-400:])
        return True

    def _lose_task(self):
        """Throw away the next task sent to a host (one with an operation
        in flight if any) on its way to the agent (:mod:`.lose`).
        """
        busy = self._busy_vms()
        hosts = sorted({self.env.spec(w.name)['host'] for w in busy}
                       or self.env.cluster.hosts)
        host = self.rng.choice(hosts)
        got = lose.lose_one(self.env.rabbit.url, host,
                            self.rng.uniform(3.0, 8.0))
        if got is None:
            return False
        self.env.lost_tasks.append((host,) + tuple(got))
        return True

    def _restart_libvirtd(self):
        """SIGKILL libvirtd and start it again; the agents reconnect.
        Skipped while a process not the run's is connected to it.
        """
        from livesnap_tools.chaos import libvirt as lv
        if not self.env.libvirt:
            return False
        ours = {os.getpid()} | {p.pid for p in
                                self.env.cluster.procs.values()}
        if lv.foreign_clients(ours) != []:
            return False
        lv.restart_libvirtd()
        return True
