"""A second QMP monitor on every benchmark VM: QEMU's own clock.

Each VM of the load benchmark is started with two QMP sockets: the agent's
(the one registered with the conductor) and one the benchmark keeps open
for the whole run.  QEMU sends every event to every monitor, each stamped
with QEMU's own wall-clock time, so on the benchmark's monitor the ``STOP``
and ``RESUME`` events of the agent's operations give every pause as QEMU
saw it, whatever the agent's threads were doing meanwhile
(``../shared/notes/qemu.md``, "The pause, from QEMU's side").

The same monitor measures the *bare* pause, ``stop`` and ``cont`` written
to the socket in one go (the least a pause can be), and writes a little
guest data through HMP ``qemu-io`` between operations.

All monitors live in one asyncio loop on one thread of their own; the
blocking methods of :class:`Observer` may be called from any thread.
"""

import asyncio
import collections
import json
import threading
import time

from agent.driver.qemu import graph

#: QMP replies can be large (query-named-block-nodes of a long chain)
_LINE_LIMIT = 16 * 1024 * 1024


class MonitorError(Exception):
    pass


def pause_windows(events, since=None, until=None):
    """``[(start, end)]`` of the pauses in ``events`` (QEMU's clock, s).

    :param events: ``[(name, timestamp)]`` in arrival order; a ``STOP``
        opens a window and the next ``RESUME`` closes it.
    :param since, until: keep the windows that start in ``[since, until]``.
    """
    out = []
    stopped = None
    for name, ts in events:
        if name == 'STOP':
            if stopped is None:
                stopped = ts
        elif name == 'RESUME' and stopped is not None:
            if ((since is None or stopped >= since)
                    and (until is None or stopped <= until)):
                out.append((stopped, ts))
            stopped = None
    return out


def top_node(nodes):
    """Node name of the top of a disk's chain in ``query-named-block-nodes``
    (flat): the qcow2 node that is no other node's backing (the longest
    chain wins if a stray node qualifies too).
    """
    nodes = [n for n in nodes if n.get('drv') == 'qcow2']
    by_file = {n['file']: n for n in nodes}
    backings = {n.get('backing_file') for n in nodes}
    tops = [n for n in nodes if n['file'] not in backings]
    if not tops:
        raise MonitorError('no top node among %d' % len(nodes))

    def depth(node):
        d = 0
        while node and node.get('backing_file') and d < 10000:
            node = by_file.get(node['backing_file'])
            d += 1
        return d
    return max(tops, key=depth)['node-name']


class Monitor(object):
    """One QMP connection: commands in order, ``STOP``/``RESUME`` kept."""

    def __init__(self, name, path, timeout):
        self.name = name
        self.path = path
        self.timeout = timeout
        self.events = []
        self._pending = collections.deque()
        self._reader = self._writer = self._task = None

    async def connect(self):
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_unix_connection(self.path, limit=_LINE_LIMIT),
            self.timeout)
        greeting = json.loads(await asyncio.wait_for(
            self._reader.readline(), self.timeout))
        if 'QMP' not in greeting:
            raise MonitorError('%s: not a QMP greeting: %s'
                               % (self.path, greeting))
        self._task = asyncio.ensure_future(self._read())
        await self.execute('qmp_capabilities')

    async def _read(self):
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                if 'event' in msg:
                    if msg['event'] in ('STOP', 'RESUME'):
                        ts = msg['timestamp']
                        self.events.append(
                            (msg['event'],
                             ts['seconds'] + ts['microseconds'] / 1e6))
                elif self._pending:
                    fut = self._pending.popleft()
                    if not fut.done():
                        fut.set_result(msg)
        finally:
            while self._pending:
                fut = self._pending.popleft()
                if not fut.done():
                    fut.set_exception(MonitorError(
                        '%s: connection closed' % self.path))

    async def batch(self, commands):
        """Write ``[(cmd, args)]`` in one socket write, then await every
        reply; QEMU runs them in order.  Returns the ``return`` values.

        :raises MonitorError: a command failed or the connection is gone.
        """
        loop = asyncio.get_running_loop()
        futs = []
        data = b''
        for cmd, args in commands:
            msg = {'execute': cmd}
            if args:
                msg['arguments'] = args
            data += json.dumps(msg).encode() + b'\n'
            fut = loop.create_future()
            self._pending.append(fut)
            futs.append(fut)
        self._writer.write(data)
        await self._writer.drain()
        replies = await asyncio.wait_for(asyncio.gather(*futs), self.timeout)
        for (cmd, _), reply in zip(commands, replies):
            if 'error' in reply:
                raise MonitorError('%s: %s failed: %s'
                                   % (self.name, cmd, reply['error']))
        return [r.get('return') for r in replies]

    async def execute(self, cmd, args=None):
        return (await self.batch([(cmd, args)]))[0]

    async def write(self, pattern, offset, length):
        node = top_node(await self.execute('query-named-block-nodes',
                                           {'flat': True}))
        out = await self.execute('human-monitor-command', {
            'command-line': 'qemu-io %s "write -P 0x%02x %d %d"'
                            % (node, pattern, offset, length)})
        if out and ('error' in out.lower() or 'fail' in out.lower()):
            raise MonitorError('%s: qemu-io write: %s' % (self.name, out))

    async def flush(self):
        """Flush the top node, so the data survives a killed QEMU and
        outside readers (``qemu-io -r -U``) see it.
        """
        node = top_node(await self.execute('query-named-block-nodes',
                                           {'flat': True}))
        out = await self.execute('human-monitor-command', {
            'command-line': 'qemu-io %s "flush"' % node})
        if out and ('error' in out.lower() or 'fail' in out.lower()):
            raise MonitorError('%s: qemu-io flush: %s' % (self.name, out))

    async def close(self):
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        if self._task is not None:
            self._task.cancel()


class Observer(object):
    """The benchmark's monitors on all VMs, on one asyncio thread."""

    def __init__(self, timeout=30.0):
        self.timeout = timeout
        self.monitors = {}
        #: name -> STOP/RESUME events of the VM's earlier QEMUs (a VM whose
        #: QEMU was killed and booted again, :meth:`reconnect`)
        self.past_events = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name='qmp-observer', daemon=True)
        self._thread.start()

    def _call(self, coro, timeout=None):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout or self.timeout * 4)

    def connect(self, name, path):
        mon = Monitor(name, path, self.timeout)
        self._call(mon.connect())
        self.monitors[name] = mon

    def reconnect(self, name, path):
        """Connect to VM ``name``'s new QEMU, keeping the old one's
        events apart (a STOP of a killed QEMU has no RESUME).
        """
        old = self.monitors.pop(name, None)
        if old is not None:
            self.past_events.setdefault(name, []).append(list(old.events))
            try:
                self._call(old.close(), timeout=10)
            except Exception:  # noqa - the old QEMU is gone anyway
                pass
        self.connect(name, path)

    def all_windows(self, name):
        """Every pause of VM ``name`` so far, its earlier QEMUs' too."""
        out = []
        for events in self.past_events.get(name, []):
            out += pause_windows(events)
        if name in self.monitors:
            out += pause_windows(list(self.monitors[name].events))
        return out

    def write(self, name, pattern, offset, length):
        """Write guest data into VM ``name``'s top layer (blocking)."""
        self._call(self.monitors[name].write(pattern, offset, length))

    def flush(self, name):
        """Flush VM ``name``'s top layer (blocking)."""
        self._call(self.monitors[name].flush())

    def top_image(self, name):
        """File of the top of VM ``name``'s chain, as QEMU has it."""
        nodes = self._call(self.monitors[name].execute(
            'query-named-block-nodes', {'flat': True}))
        top = top_node(nodes)
        # A node the agent re-opened with options of its own is named
        # json:{...}; the file is inside.
        return [graph.Graph.filename(n) for n in nodes
                if n['node-name'] == top][0]

    def status(self, name):
        return self._call(self.monitors[name].execute('query-status'))[
            'status']

    def windows(self, name, since=None, until=None):
        """Pauses of VM ``name`` seen so far, ``[(start, end)]`` on QEMU's
        clock, starting in ``[since, until]`` (wall-clock seconds).
        """
        return pause_windows(list(self.monitors[name].events), since, until)

    def bare_pauses(self, names, count, gap=0.005):
        """``count`` bare pauses on each VM in ``names``: ``stop`` and
        ``cont`` in one socket write.  Returns their lengths in ms on
        QEMU's clock (STOP to RESUME events).
        """
        async def run():
            for _ in range(count):
                for name in names:
                    await self.monitors[name].batch([('stop', None),
                                                     ('cont', None)])
                await asyncio.sleep(gap)
            # the RESUME event is sent before cont's reply; let it land
            await asyncio.sleep(0.05)
        since = time.time()
        self._call(run(), timeout=self.timeout + count * len(names))
        out = []
        for name in names:
            out += [(end - start) * 1000.0
                    for start, end in self.windows(name, since)]
        return out

    def close(self):
        """Close every monitor and stop the thread; safe to repeat."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            try:
                self._call(asyncio.gather(
                    *[m.close() for m in self.monitors.values()],
                    return_exceptions=True), timeout=10)
            except Exception:  # noqa - tearing down anyway
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
