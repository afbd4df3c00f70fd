"""An in-memory driver for unit tests: a tree of layers, no hypervisor.

Like nova's ``nova/virt/fake.py``: the agent's task runner, journal and
recovery run against it unchanged.  A layer is a name (a ``path`` that is
never opened); each has the layer it is built on.  VMs are recorded with
``add_vm``; a disk is online while its VM runs.  A VM added with
``guest_agent`` can be quiesced: its ``frozen`` flag is set between the
steps ``freeze`` and ``thaw`` (``freeze_fails`` makes its freezes fail,
``thaw_failures`` its next thaws).  Locators::

    disk   {"driver": "fake", "vm": str or None, "path": str}
    image  {"driver": "fake", "path": str}

Every method is idempotent, as the contract requires, and counts its calls
in ``calls``; ``hook`` (a callable, or None) runs inside every method that
changes layers, after its steps, to inject a failure or a wait.
"""

import collections
import contextlib
import logging
import os
import threading

from agent.driver import base
from agent.driver.qemu import qga
from agent import exception

LOG = logging.getLogger(__name__)


class FakeDriver(base.Driver):
    """See the module's docstring.

    :param record_steps: record the patent's steps on ``rec`` (off: the
        methods record none, as a driver that fails before its first).
    """

    name = 'fake'

    def __init__(self, image_dirs=('/fake',), record_steps=True,
                 **options):
        super().__init__(image_dirs, **options)
        self.record_steps = record_steps
        self.hook = None
        self.calls = collections.Counter()
        #: path -> the path it is built on, or None
        self.layers = {}
        #: name -> {"running": bool, "paused": bool}
        self.vms = {}
        self._lock = threading.Lock()

    # -- setting up a test ---------------------------------------------------
    def add_vm(self, name, running=True, paused=False, guest_agent=False):
        """:param guest_agent: the VM answers freeze and thaw."""
        self.vms[name] = {'running': running, 'paused': paused,
                          'guest_agent': guest_agent, 'frozen': False,
                          'freeze_fails': False, 'thaw_failures': 0}

    def add_disk(self, path, vm=None, backing=None):
        """A disk whose live layer is ``path``: its disk locator."""
        self.layers[path] = backing
        return {'driver': self.name, 'vm': vm, 'path': path}

    def image(self, path):
        return {'driver': self.name, 'path': path}

    # -- locators -------------------------------------------------------------
    def check(self, locator, kind='image'):
        super().check(locator, kind)
        path = locator.get('path')
        if not isinstance(path, str) or not any(
                path.startswith(d.rstrip('/') + '/')
                for d in self.image_dirs):
            raise exception.PathNotAllowed(
                '%r is outside the image directories' % (path,))

    def layer_locator(self, disk, layer_name):
        return self.image(os.path.join(os.path.dirname(disk['path']),
                                       layer_name))

    # -- the host -------------------------------------------------------------
    def list_vms(self):
        return [{'name': name, 'uuid': None, 'running': vm['running'],
                 'disks': []} for name, vm in sorted(self.vms.items())]

    def is_online(self, disk):
        vm = self.vms.get(disk.get('vm'))
        return bool(vm and vm['running'])

    def resume(self, disk):
        self.calls['resume'] += 1
        vm = self.vms.get(disk.get('vm'))
        if vm and vm['running'] and vm['paused']:
            vm['paused'] = False
            return True
        return False

    # -- the patent's methods -------------------------------------------------
    def _step(self, rec, name, **detail):
        if self.record_steps:
            with rec.step(name, **detail):
                pass

    def _run_hook(self):
        if self.hook is not None:
            self.hook()

    # -- quiesce -------------------------------------------------------------
    def can_quiesce(self, disk):
        """True if the disk's VM was added with a guest agent."""
        vm = self.vms.get(disk.get('vm'))
        return bool(vm and vm['guest_agent'])

    def thaw_guest(self, disk):
        """Thaw the disk's VM if frozen; fails while ``thaw_failures``
        lasts.  :raises QGAError:
        """
        self.calls['thaw_guest'] += 1
        vm = self.vms.get(disk.get('vm'))
        if not vm or not vm['frozen']:
            return False
        if vm['thaw_failures'] > 0:
            vm['thaw_failures'] -= 1
            raise qga.QGAError('The fake guest agent did not thaw')
        vm['frozen'] = False
        return True

    @contextlib.contextmanager
    def _quiesced(self, disk, mode, rec, outcome):
        """Like ``QemuDriver._quiesced``: freeze before the block, thaw
        after it in a ``finally`` (a failed thaw is logged, and the guest
        stays frozen).
        """
        vm = self.vms.get(disk.get('vm'))
        if mode in (None, 'off') or not self.is_online(disk):
            outcome.update(consistency='crash', consistency_reason=(
                'quiesce off' if mode in (None, 'off') else
                'offline: the server was not running'))
            yield
            return
        try:
            with rec.step('freeze'):
                if not vm['guest_agent'] or vm['freeze_fails']:
                    raise qga.QGAError('The fake guest agent did not freeze')
                vm['frozen'] = True
        except qga.QGAError as exc:
            # As QEMU's: a thaw at once (which clears the journal's mark).
            with rec.step('thaw'):
                self.thaw_guest(disk)
            if mode == 'required':
                raise exception.QuiesceFailed(
                    'Quiesce required but the guest could not be frozen: '
                    '%s' % exc)
            outcome.update(consistency='crash', consistency_reason=(
                'the guest agent did not freeze the filesystems: %s' % exc))
            yield
            return
        outcome.update(consistency='application',
                       consistency_reason='filesystems frozen by the guest '
                                          'agent during the pause')
        try:
            yield
        finally:
            try:
                with rec.step('thaw'):
                    self.thaw_guest(disk)
            except qga.QGAError as exc:
                LOG.error('Could not thaw the fake guest: %s', exc)

    def create_snapshot(self, disk, layer_name, rec, quiesce=None):
        self.calls['create_snapshot'] += 1
        new = self.layer_locator(disk, layer_name)['path']
        online = self.is_online(disk)
        outcome = {}
        with self._lock:
            if disk['path'] not in self.layers:
                raise exception.ImageError('%s is missing' % disk['path'])
            self._step(rec, 'prepare', image=new)
            with self._quiesced(disk, quiesce, rec, outcome):
                self.layers[new] = disk['path']
                self._step(rec, 'snapshot', snapshot=disk['path'],
                           active=new)
        self._run_hook()
        result = {'snapshot': self.image(disk['path']),
                  'disk': dict(disk, path=new), 'size_bytes': 1,
                  'online': online}
        if quiesce is not None:
            result.update(outcome)
        return result

    def create_snapshots(self, disks, layer_names, rec, quiesce=None):
        """All disks or none, in one step (like QEMU's transaction), in
        one freeze of the first disk's VM.
        """
        self.calls['create_snapshots'] += 1
        news = [self.layer_locator(d, n)['path']
                for d, n in zip(disks, layer_names)]
        online = self.is_online(disks[0])
        outcome = {}
        with self._lock:
            for disk in disks:
                if disk['path'] not in self.layers:
                    raise exception.ImageError('%s is missing'
                                               % disk['path'])
            for disk, new in zip(disks, news):
                self._step(rec, 'prepare', image=new)
            with self._quiesced(disks[0], quiesce, rec, outcome):
                for disk, new in zip(disks, news):
                    self.layers[new] = disk['path']
                self._step(rec, 'snapshot', disks=len(disks))
        self._run_hook()
        snapshots = []
        for d, new in zip(disks, news):
            result = {'snapshot': self.image(d['path']),
                      'disk': dict(d, path=new), 'size_bytes': 1,
                      'online': online}
            if quiesce is not None:
                result.update(outcome)
            snapshots.append(result)
        return {'online': online, 'snapshots': snapshots}

    def delete_image(self, image, rec):
        self.calls['delete_image'] += 1
        with self._lock:
            if any(b == image['path'] for b in self.layers.values()):
                raise exception.ImageInUse(
                    '%s has layers built on it' % image['path'])
            self._step(rec, 'delete', image=image['path'])
            self.layers.pop(image['path'], None)
        self._run_hook()
        return {}

    def merge(self, disk, snapshot, parent, child, rec, progress=None,
              child_is_leaf=False, cancelled=None):
        """Always streams (the child's layer stays)."""
        self.calls['merge'] += 1
        with self._lock:
            snap, kid = snapshot['path'], child['path']
            above = parent['path'] if parent else None
            if snap in self.layers and self.layers.get(kid) == above:
                # Stopped after the reparent: only the delete is left.
                del self.layers[snap]
                self._step(rec, 'delete', image=snap)
            elif snap in self.layers:
                if self.layers.get(kid) != snap:
                    raise exception.ImageError(
                        '%s is not built on %s' % (kid, snap))
                if cancelled is not None and cancelled():
                    raise exception.Cancelled()
                self._step(rec, 'merge', image=kid)
                self.layers[kid] = above
                self._step(rec, 'reparent', image=kid, parent=above)
                del self.layers[snap]
                self._step(rec, 'delete', image=snap)
            elif self.layers.get(kid) != above:
                raise exception.ImageError('%s is missing' % snap)
        if progress is not None:
            progress(100.0)
        self._run_hook()
        return {'child': child, 'disk': disk, 'direction': 'stream',
                'online': self.is_online(disk), 'child_size_bytes': 1}

    def revert(self, disk, snapshot, layer_name, rec):
        self.calls['revert'] += 1
        if self.is_online(disk):
            raise exception.ServerRunning(
                'The server is running; shut it off before reverting')
        new = self.layer_locator(disk, layer_name)['path']
        with self._lock:
            self._step(rec, 'prepare', image=new, backing=snapshot['path'])
            self.layers[new] = snapshot['path']
        self._run_hook()
        return {'disk': dict(disk, path=new), 'online': False}

    def clone(self, snapshot, layer_name, mode, rec, progress=None):
        """A new layer beside ``snapshot``: on it (linked) or standalone
        (flat).
        """
        self.calls['clone'] += 1
        new = self.layer_locator(snapshot, layer_name)['path']
        with self._lock:
            if snapshot['path'] not in self.layers:
                raise exception.ImageError('%s is missing' % snapshot['path'])
            if mode == 'linked':
                self._step(rec, 'prepare', image=new,
                           backing=snapshot['path'])
                self.layers[new] = snapshot['path']
            elif mode == 'flat':
                self._step(rec, 'copy', image=new, source=snapshot['path'])
                self.layers[new] = None
            else:
                raise exception.InvalidRequest('Unknown mode %r' % (mode,))
        if progress is not None:
            progress(100.0)
        self._run_hook()
        return {'image': self.image(new),
                'backing': snapshot if mode == 'linked' else None,
                'size_bytes': 1}

    # -- the audit ------------------------------------------------------------
    def inspect(self, locators):
        images, named = [], {}
        for locator in locators:
            info = {'locator': locator, 'exists': False, 'backing': None,
                    'check': None, 'error': None}
            try:
                self.check(locator)
            except exception.AgentError as exc:
                info['error'] = str(exc)
            else:
                path = locator['path']
                named[path] = locator
                info['exists'] = path in self.layers
                if info['exists']:
                    backing = self.layers[path]
                    info['backing'] = self.image(backing) if backing \
                        else None
                    info['check'] = 'ok'
            images.append(info)
        files = [{'path': p, 'locator': None}
                 for p in sorted(self.layers) if p not in named]
        return {'images': images, 'files': files}

    def remove(self, path):
        self.calls['remove'] += 1
        with self._lock:
            if any(b == path for b in self.layers.values()):
                return {'removed': False,
                        'error': '%s has layers built on it' % path}
            self.layers.pop(path, None)
        return {'removed': True}
