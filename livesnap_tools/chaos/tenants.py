"""The chaos run's tenants: the load benchmark's workers, made to keep
going through faults and to remember what each layer must hold.

A :class:`ChaosWorker` drives one VM like :class:`~livesnap_tools.bench_load.
tenants.Worker` (create up to ``depth`` snapshots, delete the oldest, ...)
with these differences:

* before each create it writes one slot of the disk with a pattern stamped
  with a sequence number (through the harness's own QMP monitor, HMP
  ``qemu-io``, then a flush, so the data survives a killed QEMU), and
  keeps the disk's expected content and every write's time
  (:class:`Model`): each snapshot must hold a prefix of the writes, with
  every write that ended before its request and none that began after its
  ``taken_at`` (crash consistency, see :mod:`.checks`);
* failures never stop it (faults are the point); a worker only waits for
  its VM while the fault injector has its QEMU down;
* at the deadline it stops after the operation in flight, leaving its
  snapshots, so their content can be checked afterwards.
"""

import time
import traceback

from livesnap_tools.bench_load import tenants as tenants_mod

KiB = 1024
#: the disk is written in this many slots of ``slot_size`` bytes
SLOTS = 8


class Model(object):
    """What VM's live disk and each of its snapshots must read."""

    def __init__(self, slot_size):
        self.slot_size = slot_size
        self.live = {}
        #: snapshot id -> {slot: pattern} the tenant saw succeed
        self.snapshots = {}
        #: snapshots found on the server after an operation whose outcome
        #: the tenant did not see (dropped connection, timed out)
        self.adopted = set()
        #: snapshots the tenant asked to delete (whatever came of it)
        self.delete_asked = set()
        #: snapshots whose delete the tenant saw succeed
        self.deleted = set()
        #: every write that landed, in order: (seq, slot, pattern, began,
        #: ended) on the wall clock (the snapshots' ``taken_at`` is on
        #: QEMU's, the same host's clock)
        self.history = []

    def after(self, n):
        """The disk's content after the first ``n`` writes."""
        state = {}
        for _, slot, pattern, _, _ in self.history[:n]:
            state[slot] = pattern
        return state


class ChaosWorker(tenants_mod.Worker):
    """One VM's tenant under faults (run :meth:`run` in a thread).

    :param observer: the harness's :class:`~livesnap_tools.bench_load.monitor.
        Observer` (writes and flushes go through it).
    :param vm_state: the injector's view of the VM: ``up`` (an Event set
        while its QEMU runs) and ``lock`` (held while the tenant writes, so
        a QEMU is never killed in the middle of a tenant's write).
    """

    def __init__(self, spec, base_url, deadline, depth, poll_interval,
                 observer, vm_state, slot_size=64 * KiB, seed=0):
        super().__init__(spec, base_url, deadline, depth, poll_interval)
        self.observer = observer
        self.vm_state = vm_state
        self.model = Model(slot_size)
        self.seq = seed * 1000
        #: what the operation in flight is ('create'/'delete'), or None
        self.current = None
        self.errors = []
        self._post_content = None

    # -- the loop -------------------------------------------------------
    def run(self):
        try:
            while time.time() < self.deadline and not self.stop_now:
                try:
                    if len(self._snaps) < self.depth:
                        self._create()
                    elif self._snaps:
                        self._delete(self._snaps[0])
                except Exception:  # noqa - keep going, reported
                    self.errors.append(traceback.format_exc(limit=3))
                    time.sleep(1.0)
                    try:
                        self._resync()
                    except Exception:  # noqa
                        pass
        finally:
            self.client.close()

    def _wait_up(self):
        while not self.vm_state['up'].wait(0.5):
            if self.stop_now or time.time() > self.deadline + 300:
                raise RuntimeError('VM %s never came back' % self.name)

    def _write_slot(self):
        """Write the next slot (retried until it lands: a full image
        directory refuses writes for a while) and flush it.
        """
        self.seq += 1
        slot = self.seq % SLOTS
        pattern = self.seq % 255 + 1
        size = self.model.slot_size
        began = time.time()
        while True:
            self._wait_up()
            with self.vm_state['lock']:
                if not self.vm_state['up'].is_set():
                    continue
                try:
                    self.observer.write(self.name, pattern, slot * size,
                                        size)
                    self.observer.flush(self.name)
                    self.model.live[slot] = pattern
                    self.model.history.append(
                        (self.seq, slot, pattern, began, time.time()))
                    return
                except Exception as exc:  # noqa - ENOSPC, QEMU stopped
                    self.errors.append('write: %s' % exc)
            if self.stop_now:
                raise RuntimeError('stopped while writing')
            time.sleep(0.5)

    def _create(self):
        self._write_slot()
        self._post_content = dict(self.model.live)
        self._counter += 1
        rec = self._operation(
            'create', 'POST', '/v1/servers/%s/snapshots' % self.name,
            {'snapshot': {'name': 'chaos-%d' % self.seq, 'disk': 'vda'}})
        if rec is not None and rec['status'] == 'succeeded':
            self.model.snapshots[rec['snapshot_id']] = self._post_content
            if rec['snapshot_id'] not in self._snaps:
                self._snaps.append(rec['snapshot_id'])

    def _delete(self, snap_id):
        self.model.delete_asked.add(snap_id)
        rec = self._operation('delete', 'DELETE',
                              '/v1/snapshots/%s' % snap_id)
        if rec is not None and rec['status'] == 'succeeded':
            self.model.deleted.add(snap_id)
            if snap_id in self._snaps:
                self._snaps.remove(snap_id)

    def _operation(self, action, method, path, body=None):
        self._wait_up()
        self.current = action
        try:
            return super()._operation(action, method, path, body)
        finally:
            self.current = None

    def _failed(self, action, why):
        # Under faults failures are expected: never give up, and do not
        # hammer a conductor that is coming back.
        self._consecutive = 0
        super()._failed(action, why)
        time.sleep(0.2)

    def _resync(self):
        """As the load worker's, but a snapshot found ``available`` that
        the tenant never saw succeed is adopted with the content written
        before the request that must have made it.
        """
        deadline = time.monotonic() + tenants_mod.OP_TIMEOUT
        while time.monotonic() < deadline and self._disk_busy():
            time.sleep(max(self.poll, 0.05))
        status, payload = self.client.request(
            'GET', '/v1/servers/%s/snapshots' % self.name)
        if status != 200:
            return
        snaps = [s for s in payload['snapshots']
                 if s['status'] in ('available', 'error')]
        snaps.sort(key=lambda s: s['created_at'] or '')
        self._snaps = [s['id'] for s in snaps]
        for sid in [s['id'] for s in snaps if s['status'] == 'available']:
            if (sid not in self.model.snapshots
                    and self._post_content is not None):
                # created by a request whose answer we did not see: it
                # holds what was written before that request
                self.model.snapshots[sid] = dict(self._post_content)
                self.model.adopted.add(sid)
