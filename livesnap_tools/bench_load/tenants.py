"""The tenants of the load benchmark: HTTP clients looping on their VMs.

Each VM is driven by one :class:`Worker` thread speaking for the VM's
tenant (its project's token): write a little guest data, ``POST`` a
snapshot, poll ``GET /v1/operations/{id}`` until it ends, again until the
VM has ``depth`` snapshots, then ``DELETE`` them oldest first (each has one
child, so each is a merge), and over again until the deadline; after the
deadline it only finishes the deletes of the cycle it is in, so every VM
ends where it started.

A worker records every operation (times on this machine's wall clock, the
operation's final record) and counts its HTTP requests and the connections
that failed.  A ``GET`` that fails on the connection is retried; a
``POST`` or ``DELETE`` is not (it may have been acted on): the worker
waits until the disk is idle and reads its snapshot list again.
"""

import http.client
import json
import random
import socket
import time
import traceback
import urllib.parse

#: how long one operation may take before the worker gives up on it
OP_TIMEOUT = 120.0
#: after this long, a worker also checks that its disk is still locked
STUCK_CHECK = 5.0
#: consecutive failures after which a worker stops (and says why)
MAX_FAILURES = 5


class Dropped(Exception):
    """A POST or DELETE whose connection failed: its outcome is unknown."""


class Client(object):
    """One HTTP/1.1 connection to a conductor, re-opened when it closes."""

    def __init__(self, base_url, token, timeout=60.0):
        u = urllib.parse.urlsplit(base_url)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.timeout = timeout
        self.conn = None
        #: responses received (any status)
        self.requests = 0
        #: requests whose connection failed (reset, refused, timed out)
        self.conn_errors = 0

    def _close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, retry=True):
        """``(status, json)``.  Connection failures are retried (up to a
        minute) when ``retry``, else raise :class:`Dropped`.
        """
        data = json.dumps(body).encode() if body is not None else None
        headers = {'X-Auth-Token': self.token}
        if data is not None:
            headers['Content-Type'] = 'application/json'
        deadline = time.monotonic() + 60.0
        delay = 0.01
        while True:
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(
                        self.host, self.port, timeout=self.timeout)
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                self.requests += 1
                if resp.will_close:
                    self._close()
                try:
                    return resp.status, json.loads(payload or b'null')
                except ValueError:
                    return resp.status, payload.decode(errors='replace')
            except (OSError, http.client.HTTPException, socket.timeout):
                self.conn_errors += 1
                self._close()
                if not retry:
                    raise Dropped('%s %s' % (method, path))
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def close(self):
        self._close()


def agent_pause_of(op):
    """The agent's own pause figure (ms): ``agent_pause_ms`` where the
    record has it (``pause_ms`` is then QEMU's), else ``pause_ms``.
    """
    if op.get('agent_pause_ms') is not None:
        return op['agent_pause_ms']
    return op.get('pause_ms')


def qemu_pause_of(op):
    """A QEMU-clock pause figure the operation record may carry (ms), or
    None: a top-level ``qemu_pause_ms`` (or any ``*qemu*_ms`` number), or
    the same in a step's ``detail``.  Tolerates records without it.
    """
    def find(d):
        if not isinstance(d, dict):
            return None
        if isinstance(d.get('qemu_pause_ms'), (int, float)):
            return float(d['qemu_pause_ms'])
        for key, val in d.items():
            if ('qemu' in key and key.endswith('_ms')
                    and isinstance(val, (int, float))
                    and not isinstance(val, bool)):
                return float(val)
        return None
    found = find(op)
    if found is not None:
        return found
    total = None
    for step in op.get('steps') or []:
        val = find(step.get('detail'))
        if val is not None:
            total = (total or 0.0) + val
    if total is None and op.get('agent_pause_ms') is not None:
        # Step details are host details, hidden from tenants; a record
        # with agent_pause_ms beside it has QEMU's figure as pause_ms.
        total = op.get('pause_ms')
    return total


class Worker(object):
    """Drives one VM for its tenant (run :meth:`run` in a thread).

    :param spec: the cluster's VM dict (``name``, ``token``).
    :param write: ``write(vm_name, pattern, offset, length)`` or None.
    :param interval: seconds from one operation's start to the next's (an
        offered rate; a worker behind it starts at once and does not catch
        up), or 0 to start each as soon as the last one ended.
    """

    def __init__(self, spec, base_url, deadline, depth, poll_interval,
                 write=None, write_bytes=0, disk_size=0, interval=0.0):
        self.name = spec['name']
        self.client = Client(base_url, spec['token'])
        self.deadline = deadline
        self.depth = depth
        self.poll = poll_interval
        self._write = write
        self.write_bytes = write_bytes
        self.disk_size = disk_size
        self.records = []
        self.failures = []
        self.dropped = 0
        self.crash = None
        self.stop_now = False
        self._snaps = []
        self._consecutive = 0
        self._counter = 0
        self.interval = interval
        # a random phase, so the workers' starts do not come in bursts
        self._next_start = time.time() + random.uniform(0.0, interval)

    # -- the loop -------------------------------------------------------
    def run(self):
        try:
            while time.time() < self.deadline and not self.stop_now:
                while (len(self._snaps) < self.depth
                       and time.time() < self.deadline
                       and not self.stop_now):
                    self._create()
                while self._snaps and not self.stop_now:
                    self._delete(self._snaps[0])
        except Exception:  # noqa - reported in the table
            self.crash = traceback.format_exc(limit=5)
        finally:
            self.client.close()

    def _create(self):
        self._counter += 1
        if self._write is not None and self.write_bytes:
            span = max(1, self.disk_size // self.write_bytes)
            self._write(self.name, self._counter & 0xff,
                        (self._counter % span) * self.write_bytes,
                        self.write_bytes)
        rec = self._operation(
            'create', 'POST', '/v1/servers/%s/snapshots' % self.name,
            {'snapshot': {'name': 'load-%d' % self._counter,
                          'disk': 'vda'}})
        if rec is not None and rec['status'] == 'succeeded':
            self._snaps.append(rec['snapshot_id'])

    def _delete(self, snap_id):
        rec = self._operation('delete', 'DELETE',
                              '/v1/snapshots/%s' % snap_id)
        if rec is not None and rec['status'] == 'succeeded':
            self._snaps.remove(snap_id)

    def _operation(self, action, method, path, body=None):
        """Start one operation and wait for it; return its record (None if
        it could not start) and keep the worker in step on failures.
        """
        if self.interval:
            wait = self._next_start - time.time()
            if wait > 0:
                time.sleep(wait)
            self._next_start = max(self._next_start,
                                   time.time()) + self.interval
        t_post = time.time()
        try:
            status, payload = self.client.request(method, path, body,
                                                  retry=False)
        except Dropped:
            self.dropped += 1
            self._failed(action, 'connection dropped on %s' % method)
            return None
        if status != 202:
            code = (payload.get('error', {}).get('code')
                    if isinstance(payload, dict) else None)
            self._failed(action, 'HTTP %s %s' % (status, code or ''))
            if status in (429, 503):
                time.sleep(0.5)
            return None
        op = payload['operation']
        snap_id = (payload.get('snapshot') or {}).get('id') or op.get(
            'snapshot_id')
        next_check = t_post + STUCK_CHECK
        while op['status'] not in ('succeeded', 'failed'):
            now = time.time()
            if now - t_post > OP_TIMEOUT:
                self._failed(action, 'still %s after %d s'
                             % (op['status'], OP_TIMEOUT))
                return None
            if now > next_check:
                next_check = now + STUCK_CHECK
                if not self._disk_busy():
                    # read again: the report may have landed just now
                    status, payload = self.client.request(
                        'GET', '/v1/operations/%s' % op['id'])
                    if status == 200:
                        op = payload['operation']
                    if op['status'] in ('succeeded', 'failed'):
                        continue
                    reported = bool(op.get('steps'))
                    self._failed(action, 'operation still %s while its '
                                 'disk is unlocked; %s' % (
                                     op['status'],
                                     'its record holds the agent\'s '
                                     'steps: the report was applied, then '
                                     'the status overwritten' if reported
                                     else 'no report in its record'))
                    return None
            time.sleep(self.poll)
            status, payload = self.client.request(
                'GET', '/v1/operations/%s' % op['id'])
            if status != 200:
                self._failed(action, 'GET operation: HTTP %s' % status)
                return None
            op = payload['operation']
        t_done = time.time()
        rec = {'action': action, 'vm': self.name, 'id': op['id'],
               'snapshot_id': snap_id, 'status': op['status'],
               'mode': op.get('mode'), 't_post': t_post, 't_done': t_done,
               'latency_ms': (t_done - t_post) * 1000.0,
               'pause_ms': agent_pause_of(op),
               'qemu_record_ms': qemu_pause_of(op),
               'error': op.get('error')}
        self.records.append(rec)
        if op['status'] != 'succeeded':
            self._failed(action, 'operation failed: %s'
                         % (op.get('error') or '?'))
        else:
            self._consecutive = 0
        return rec

    def _failed(self, action, why):
        """Note a failure, wait until the disk is idle and read the
        snapshots again so the loop goes on from the real state.
        """
        self.failures.append({'action': action, 'error': str(why)[:300],
                              'at': time.time()})
        self._consecutive += 1
        if self._consecutive >= MAX_FAILURES:
            raise RuntimeError('%d failures in a row on %s, last: %s'
                               % (self._consecutive, self.name, why))
        self._resync()

    def _disk_busy(self):
        status, payload = self.client.request('GET',
                                              '/v1/servers/%s' % self.name)
        return status != 200 or any(d['busy']
                                    for d in payload['server']['disks'])

    def _resync(self):
        deadline = time.monotonic() + OP_TIMEOUT
        while time.monotonic() < deadline and self._disk_busy():
            time.sleep(max(self.poll, 0.05))
        status, payload = self.client.request(
            'GET', '/v1/servers/%s/snapshots' % self.name)
        if status == 200:
            snaps = [s for s in payload['snapshots']
                     if s['status'] in ('available', 'error')]
            snaps.sort(key=lambda s: s['created_at'] or '')
            self._snaps = [s['id'] for s in snaps]
