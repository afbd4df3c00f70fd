"""Benchmark section ``pause``: the VM's pause on QEMU's own clock.

The pause is the window between QEMU's ``STOP`` and ``RESUME`` events,
whose timestamps QEMU takes itself, so it does not depend on when the
client got to read them.  Each way of sending a paused section is measured
with the client's process idle and busy (CPU-bound Python threads beside
it, as in an agent running many operations at once):

- ``driver create`` / ``driver merge``: the agent's driver as it runs
  (``QemuDriver.create_snapshot`` and ``merge``), whose ``pause_ms`` is that
  window, beside its own figure ``agent_pause_ms``;
- ``awaited``: ``stop``, ``blockdev-snapshot``, ``cont``, each reply
  awaited before the next command is sent (the agent before the batch);
- ``floor``: ``stop`` and ``cont`` in one write, nothing between, and
  ``floor awaited``: the same with ``stop``'s reply awaited before ``cont``;
- ``transaction``: a QMP ``transaction`` with the ``blockdev-snapshot``
  action and no ``stop``: QEMU drains only the disk's I/O for the graph
  change and the vCPUs keep running.  There are no events for that window,
  so the figure is the command's round trip seen by the client, an upper
  bound of the drained window.
"""

import os
import threading
import time

from agent.driver.qemu import driver as qemu
from agent.driver.qemu import graph
from agent.driver.qemu import qmp
from agent import images
from agent import steps

MiB = 1024 * 1024


def _qemu_window_ms(session):
    stop = session.last_event('STOP')
    resume = session.last_event('RESUME')
    if stop is None or resume is None:
        return None
    return (qmp.event_time(resume) - qmp.event_time(stop)) * 1000.0


class _Busy(object):
    """CPU-bound Python threads in this process while the block runs."""

    def __init__(self, threads):
        self.threads = threads
        self._stop = threading.Event()
        self._workers = []

    def _spin(self):
        x = 0
        while not self._stop.is_set():
            for i in range(1000):
                x += i * i

    def __enter__(self):
        for _ in range(self.threads):
            t = threading.Thread(target=self._spin, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._workers:
            t.join()


def _open_overlay(session, top_image, new, node):
    images.create_overlay(new, top_image)
    session.execute('blockdev-add', {
        'driver': 'qcow2', 'node-name': node,
        'file': {'driver': 'file', 'filename': new}, 'backing': None})


def _awaited(session, state, new):
    node = graph.node_name_for(new)
    _open_overlay(session, state['image'], new, node)
    session.events.clear()
    t0 = time.monotonic()
    session.execute('stop')
    session.execute('blockdev-snapshot', {'node': state['node'],
                                          'overlay': node})
    session.execute('cont')
    agent_ms = (time.monotonic() - t0) * 1000.0
    state.update(node=node, image=new)
    return _qemu_window_ms(session), agent_ms


def _floor(session, state, new):
    session.events.clear()
    t0 = time.monotonic()
    ids = session.send([('stop', None), ('cont', None)])
    for msg_id in ids:
        session.reply(msg_id)
    return _qemu_window_ms(session), (time.monotonic() - t0) * 1000.0


def _floor_awaited(session, state, new):
    session.events.clear()
    t0 = time.monotonic()
    session.execute('stop')
    session.execute('cont')
    return _qemu_window_ms(session), (time.monotonic() - t0) * 1000.0


def _transaction(session, state, new):
    node = graph.node_name_for(new)
    _open_overlay(session, state['image'], new, node)
    t0 = time.monotonic()
    session.execute('transaction', {'actions': [
        {'type': 'blockdev-snapshot',
         'data': {'node': state['node'], 'overlay': node}}]})
    rtt = (time.monotonic() - t0) * 1000.0
    state.update(node=node, image=new)
    return rtt, rtt


def _create(driver, disk, new, rec):
    """Snapshot ``disk`` (updated in place) into a layer named after
    ``new``; the frozen layer's path (the live layer keeps the disk's on
    the drivers that keep it, issue 20).
    """
    res = driver.create_snapshot(
        disk, os.path.basename(new)[:-len('.qcow2')], rec)
    disk.update(res['disk'])
    return res['snapshot']['path']


def _driver_create(driver, disk, new):
    rec = steps.StepRecorder()
    _create(driver, disk, new, rec)
    return rec.pause_ms, rec.agent_pause_ms


def _driver_merge(driver, disk, vm, directory, i):
    """Snapshot twice, then merge the middle layer into the live one."""
    below = _create(driver, disk, os.path.join(directory, 'm%03d-a.qcow2'
                                               % i), steps.StepRecorder())
    vm.write(i & 0xff, (i % 64) * MiB, 65536)
    mid = _create(driver, disk, os.path.join(directory, 'm%03d-b.qcow2'
                                             % i), steps.StepRecorder())
    rec = steps.StepRecorder()
    # the live layer is the child: the child is the disk
    driver.merge(disk, driver.image(mid), driver.image(below), disk, rec)
    return rec.pause_ms, rec.agent_pause_ms


VARIANTS = (
    ('driver create', 'the agent\'s driver: stop, blockdev-snapshot, cont in '
                      'one write'),
    ('driver merge', 'the agent\'s driver: stop, job-finalize, cont in one '
                     'write'),
    ('awaited', 'stop, blockdev-snapshot, cont, each reply awaited'),
    ('floor', 'stop + cont in one write, nothing between'),
    ('floor awaited', 'stop, then cont once stop answered, nothing between'),
    ('transaction', 'QMP transaction [blockdev-snapshot], no stop '
                    '(round trip)'),
)


def bench_pause(opts, start_vm, summary, tmpdir, busy_threads=3):
    """Run every variant idle and busy; ``start_vm(directory)`` returns
    ``(vm, base_image)``.
    """
    rows = []
    for load in ('idle', 'busy'):
        for key, what in VARIANTS:
            d = tmpdir()
            vm, base = start_vm(d)
            driver = qemu.QemuDriver([d])
            disk = {'driver': driver.name, 'qmp_socket': vm.qmp_socket,
                    'path': base}
            state = {'node': 'disk0', 'image': base}
            qemu_ms, agent_ms = [], []
            session = None
            try:
                if not key.startswith('driver'):
                    session = qmp.QMPSession(vm.qmp_socket).open()
                with _Busy(busy_threads if load == 'busy' else 0):
                    for i in range(opts.n):
                        new = os.path.join(d, 'l%03d.qcow2' % i)
                        if key == 'driver create':
                            q, a = _driver_create(driver, disk, new)
                        elif key == 'driver merge':
                            q, a = _driver_merge(driver, disk, vm, d, i)
                        elif key == 'awaited':
                            q, a = _awaited(session, state, new)
                        elif key == 'floor':
                            q, a = _floor(session, state, new)
                        elif key == 'floor awaited':
                            q, a = _floor_awaited(session, state, new)
                        else:
                            q, a = _transaction(session, state, new)
                        qemu_ms.append(q)
                        agent_ms.append(a)
                status = (session.status() if session is not None
                          else vm.status())
                if status != 'running':
                    raise RuntimeError('%s: VM %s at the end' % (key, status))
            finally:
                if session is not None:
                    session.close()
                vm.kill()
            rows.append({'load': load, 'key': key, 'variant': what,
                         'n': len(qemu_ms),
                         'qemu_ms': summary([x for x in qemu_ms
                                             if x is not None]),
                         'agent_ms': summary(agent_ms)})
    notes = [
        'qemu = QEMU\'s STOP..RESUME event timestamps (its own clock); '
        'agent = the client\'s view, from writing stop to reading cont\'s '
        'answer; busy = %d CPU-bound Python threads in the client\'s '
        'process meanwhile.' % busy_threads,
        'transaction: no STOP/RESUME events exist for a drained section, so '
        'both columns show the command\'s round trip seen by the client.',
    ]
    return {'rows': rows, 'notes': notes}


def render(section, table, trio):
    out = ['0. The pause on QEMU\'s clock, by how the paused section is '
           'sent (ms, p50 / p95 / max)']
    out += table(['load', 'variant', 'n', 'qemu', 'agent'],
                 [[r['load'], r['key'], r['n'], trio(r['qemu_ms'], 2),
                   trio(r['agent_ms'], 2)] for r in section['rows']])
    out += ['  * %s: %s' % (k, w) for k, w in VARIANTS]
    out += ['  * ' + n for n in section['notes']] + ['']
    return out
