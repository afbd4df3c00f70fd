"""One harness per agent driver for the driver contract suite
(tests/functional/test_driver_contract.py).

A harness loads its driver BY NAME through the agent's own loader
(``agent.driver.load``, entry point group ``livesnap.agent.drivers``), so
the suite does not depend on where a driver's module lives, and makes what
the cases need: a VM with one or two disks (``vda``, ``vdb``) on fresh
16 MiB qcow2 bases, their disk locators, a way to write a pattern into a
disk (through the running VM, or with qemu-io while it is shut off) and to
check what a layer shows from outside (``qemu-io -r -U``).  What differs
from driver to driver (step names, what it supports) is said here, as
class attributes; the cases are written once.

* ``fake``: agent/driver/fake.py, layers in memory.  It holds no data:
  writes are not made and content is not checked (the chain is).
* ``qemu``: ``qemu-system-x86_64 -M none`` (livesnap_tools/testvm.py)
  with one ``-blockdev`` per disk, driven over its QMP socket.
* ``libvirt``: a TCG domain with two virtio disks
  (``livesnap_tools.libvirtd.domain_xml``, as tests/functional/libvirt_vm.py
  makes them); data goes in through HMP ``qemu-io`` on the disk's device
  while it runs.
"""

import os
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET

from agent import driver as driver_loader
from agent import images
from livesnap_tools import libvirtd
from livesnap_tools import testvm

SIZE = 16 * 1024 * 1024
CHUNK = 64 * 1024
MiB = 1024 * 1024
TARGETS = ('vda', 'vdb')


class Harness(object):
    """What the cases ask of a driver's test bed (see the module)."""

    #: the entry point name the driver is loaded by
    name = None
    #: constructor options given to the loader
    options = {}
    #: steps of an online create, and of an offline one
    online_create_steps = None
    offline_create_steps = ['prepare', 'snapshot']
    #: steps of a create run again once done
    rerun_create_steps = []
    #: the pause step's detail says whether the VM was running
    records_was_running = False
    revert_steps = ['prepare']
    #: steps of an online group create of two disks
    group_steps = None
    #: steps of a merge into the live layer, by (online, direction);
    #: None: the driver's steps vary with what it finds, only ``merge``
    #: and ``delete`` are required
    merge_steps = {}
    #: a merge of a snapshot into an intermediate child, by online: its
    #: direction and steps (None: only ``merge`` and ``delete`` required)
    intermediate_direction = {True: 'stream', False: 'stream'}
    intermediate_steps = {True: None, False: None}
    #: True: a merge into a live layer that holds less than the snapshot
    #: commits it (the cheaper way); False: it always streams
    commits = True
    #: True: the live layer keeps the disk's path and a create names the
    #: snapshot by the new layer name (issue 20); False: the new layer
    #: is the live one and the old live file is the snapshot
    keeps_path = False
    #: True: the layers hold data, checked with qemu-io
    has_data = True
    #: the crash-point case: the step names of an online create and of
    #: an online merge into the live layer where the agent may die
    create_crash_steps = ()
    merge_crash_steps = ()
    #: steps of a merge by stream whose points the commit path does not
    #: reach first (its flush pause)
    stream_crash_steps = ()
    #: True: the agent is killed (SIGKILL, in a child process); False: an
    #: exception stands in for the kill (the driver's state is in memory)
    kill_for_crash = True
    #: True: the driver refuses to delete a layer a running VM holds open
    #: (the fake knows only what is built on what)
    knows_open_layers = True
    #: True: a guest agent answers without a real guest (the fake's)
    can_freeze_without_guest = False
    #: steps of a ``required`` quiesce refused before the pause
    quiesce_refused_steps = ['prepare']
    #: steps a freeze that failed leaves (besides the create's)
    failed_freeze_steps = ()

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.imgdir = str(tmp_path / 'images')
        os.makedirs(self.imgdir, exist_ok=True)
        self.driver = driver_loader.load(self.name, [self.imgdir],
                                         **self.options)
        self.bases = {}

    # -- locators ----------------------------------------------------------
    def image(self, path):
        return {'driver': self.name, 'path': path}

    def new_path(self, disk, layer_name):
        return self.driver.layer_locator(disk, layer_name)['path']

    # -- the VM --------------------------------------------------------------
    def make_vm(self, targets=('vda',), guest_agent=False):
        """A shut-off VM whose disks ``targets`` sit on fresh bases.
        :returns: their disk locators, in order.
        """
        raise NotImplementedError

    def start(self, disks):
        """Start the VM on the disks' live layers."""
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def pause(self):
        raise NotImplementedError

    def status(self):
        """``running``, ``paused`` or ``shut off``."""
        raise NotImplementedError

    def live_chain(self, disk):
        """The files the running VM reads for ``disk``, live layer
        first.
        """
        raise NotImplementedError

    def defined_chain(self, disk):
        """The live layer the VM's definition names for ``disk`` (what it
        boots on next), or None when the driver keeps no definition.
        """
        return None

    def online_disk(self, disk):
        """The disk's locator as the driver gets it while the VM runs."""
        return disk

    def cleanup(self):
        pass

    # -- what only some drivers say --------------------------------------
    def check_online_create(self, rec):
        """Driver-specific checks of an online create's steps."""

    def check_no_agent_reason(self, reason):
        """Driver-specific checks of why a guest was not frozen."""

    def check_thaw_without_agent(self, disk):
        """``thaw_guest`` of a guest with no agent that answers."""
        assert self.driver.thaw_guest(disk) is False

    def check_idle(self, disk):
        """After a merge of the running VM: no block job is left, and
        the VM holds no layer but its chain.
        """

    # -- data ------------------------------------------------------------
    def write(self, disk, pattern, offset, length=CHUNK):
        """Write into the disk's live layer: through the VM while it
        runs, with qemu-io while it is shut off.
        """
        if self.status() == 'shut off':
            write_offline(disk['path'], pattern, offset, length)
        else:
            self._write_online(disk, pattern, offset, length)

    def settle(self, disks=()):
        """Make what the running VM wrote readable from outside."""

    def assert_content(self, path, layout):
        """``layout``: (pattern, offset, length) the layer must show."""
        for pattern, offset, length in layout:
            assert testvm.read_pattern_ok(path, pattern, offset, length), (
                '%s does not read 0x%02x at %d' % (path, pattern, offset))

    def backing(self, path):
        return images.backing_file(path)

    def exists(self, path):
        return os.path.exists(path)

    def check(self, path):
        images.check(path, force_share=True)

    def size(self, path):
        return images.actual_size(path)


def write_offline(image, pattern, offset, length=CHUNK):
    """Write ``pattern`` into ``image`` with qemu-io (no QEMU has it
    open).
    """
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0x%02x %d %d' % (pattern, offset, length),
                    image], check=True, capture_output=True)


class FakeHarness(Harness):
    name = 'fake'
    online_create_steps = ['prepare', 'snapshot']
    group_steps = ['prepare', 'prepare', 'snapshot']
    merge_steps = {(True, 'stream'): ['merge', 'reparent', 'delete'],
                   (False, 'stream'): ['merge', 'reparent', 'delete']}
    commits = False
    has_data = False
    rerun_create_steps = ['prepare', 'snapshot']
    intermediate_steps = {True: ['merge', 'reparent', 'delete'],
                          False: ['merge', 'reparent', 'delete']}
    create_crash_steps = ('prepare', 'snapshot')
    merge_crash_steps = ('merge', 'reparent', 'delete')
    kill_for_crash = False
    knows_open_layers = False
    can_freeze_without_guest = True
    quiesce_refused_steps = ['prepare', 'freeze', 'thaw']
    failed_freeze_steps = ('freeze', 'thaw')

    VM = 'vm1'

    def make_vm(self, targets=('vda',), guest_agent=False):
        self.driver.add_vm(self.VM, running=False, guest_agent=guest_agent)
        disks = []
        for target in targets:
            base = os.path.join(self.imgdir, '%s-base' % target)
            self.bases[target] = base
            disks.append(self.driver.add_disk(base, vm=self.VM))
        return disks

    def start(self, disks):
        self.driver.vms[self.VM].update(running=True, paused=False)

    def stop(self):
        self.driver.vms[self.VM].update(running=False, paused=False)

    def pause(self):
        self.driver.vms[self.VM]['paused'] = True

    def status(self):
        vm = self.driver.vms[self.VM]
        if not vm['running']:
            return 'shut off'
        return 'paused' if vm['paused'] else 'running'

    def live_chain(self, disk):
        chain, path = [], disk['path']
        while path is not None:
            chain.append(path)
            path = self.driver.layers.get(path)
        return chain

    def write(self, disk, pattern, offset, length=CHUNK):
        """The fake holds no data."""

    def assert_content(self, path, layout):
        """The fake holds no data: only that the layer exists."""
        assert path in self.driver.layers, path

    def backing(self, path):
        return self.driver.layers.get(path)

    def exists(self, path):
        return path in self.driver.layers

    def check(self, path):
        assert path in self.driver.layers, path

    def size(self, path):
        return 1


class _QemuVM(testvm.TestVM):
    """A ``-M none`` QEMU with one qcow2 ``-blockdev`` per disk
    (``disk0``, ``disk1``...).
    """

    def __init__(self, paths, qmp_socket, name):
        super().__init__(paths[0], qmp_socket, name=name)
        self.paths = [os.path.abspath(p) for p in paths]

    def command(self):
        cmd = super().command()
        for i, path in enumerate(self.paths[1:], 1):
            at = cmd.index('-daemonize')
            cmd[at:at] = ['-blockdev',
                          'driver=qcow2,node-name=disk%d,file.driver=file,'
                          'file.filename=%s' % (i, path.replace(',', ',,'))]
        return cmd

    def node_of(self, path):
        for node in self.nodes():
            if os.path.realpath(node['file']) == os.path.realpath(path):
                return node['node-name']
        raise AssertionError('no node for %s in %s' % (path, self.nodes()))


class QemuHarness(Harness):
    name = 'qemu'
    options = dict(pause_deadline=30.0, qmp_timeout=30.0,
                   job_poll_interval=0.02)
    online_create_steps = ['prepare', 'pause', 'pivot', 'resume']
    group_steps = ['prepare', 'prepare', 'pause', 'pivot', 'resume']
    keeps_path = True
    merge_steps = {
        (True, 'stream'): ['prepare', 'pause', 'merge', 'resume',
                           'reparent', 'delete', 'purge'],
        (True, 'commit'): ['prepare', 'pause', 'merge', 'resume',
                           'reparent', 'delete', 'purge'],
        (False, 'stream'): ['merge', 'reparent', 'delete'],
        (False, 'commit'): ['merge', 'reparent', 'delete']}
    intermediate_steps = {True: ['prepare', 'pause', 'merge', 'resume',
                                 'reparent', 'delete', 'purge'],
                          False: ['merge', 'reparent', 'delete']}
    create_crash_steps = ('prepare', 'pause', 'pivot', 'resume')
    merge_crash_steps = ('prepare', 'pause', 'merge', 'resume', 'reparent',
                         'delete', 'purge')

    def __init__(self, tmp_path):
        super().__init__(tmp_path)
        # unix socket paths are short; pytest's tmp_path may be too long
        self.sockdir = tempfile.mkdtemp(prefix='ls-', dir='/tmp')
        self.sock = os.path.join(self.sockdir, 'vm.sock')
        self.vm = None

    def make_vm(self, targets=('vda',), guest_agent=False):
        disks = []
        for target in targets:
            base = os.path.join(self.imgdir, '%s-base.qcow2' % target)
            images.create_base(base, SIZE)
            self.bases[target] = base
            disks.append({'driver': 'qemu', 'qmp_socket': self.sock,
                          'path': base})
        return disks

    def start(self, disks):
        self.vm = _QemuVM([d['path'] for d in disks], self.sock, 'contract')
        self.vm.start()

    def stop(self):
        if self.vm is not None:
            self.vm.shutdown()
            self.vm = None

    def pause(self):
        self.vm.stop_vm()

    def status(self):
        if self.vm is None or not self.vm.alive():
            return 'shut off'
        return self.vm.status()

    def live_chain(self, disk):
        nodes = {os.path.realpath(n['file']): n for n in self.vm.nodes()}
        chain, path = [], disk['path']
        while path:
            assert os.path.realpath(path) in nodes, (path, nodes)
            chain.append(path)
            path = nodes[os.path.realpath(path)].get('backing_file')
        return chain

    def check_idle(self, disk):
        assert self.vm.qmp('query-jobs') == []
        assert sorted(os.path.realpath(n['file']) for n in self.vm.nodes()
                      ) == sorted(os.path.realpath(p)
                                  for p in self.live_chain(disk))

    def _write_online(self, disk, pattern, offset, length):
        self.vm.write(pattern, offset, length,
                      node=self.vm.node_of(disk['path']))

    def settle(self, disks=()):
        # stop flushes every node; resume afterwards
        if self.status() == 'running':
            self.vm.stop_vm()
            self.vm.cont()

    def cleanup(self):
        if self.vm is not None:
            self.vm.kill()
        shutil.rmtree(self.sockdir, ignore_errors=True)


#: the block backend of a libvirt disk's device, by target
_LIBVIRT_DEVICE = '/machine/peripheral/virtio-disk%d/virtio-backend'


class LibvirtHarness(Harness):
    name = 'libvirt'
    # suspend: the pause is a real suspend, on QEMU's clock
    options = dict(uri=libvirtd.URI, snapshot_pause='suspend',
                   job_poll_interval=0.05, job_timeout=600,
                   quiesce_timeout=2.0)
    online_create_steps = ['prepare', 'pause', 'snapshot', 'resume']
    group_steps = ['prepare', 'prepare', 'pause', 'snapshot', 'resume']
    #: the new layer, then the definition switched to it
    revert_steps = ['prepare', 'snapshot']
    #: a stream (blockPull) then a flush pause; a commit and its pivot
    merge_steps = {
        (True, 'stream'): ['prepare', 'merge', 'reparent', 'pause',
                           'resume', 'delete', 'purge'],
        (True, 'commit'): ['prepare', 'merge', 'pause', 'snapshot',
                           'resume', 'reparent', 'pause', 'resume',
                           'delete', 'purge'],
        (False, 'stream'): None,
        (False, 'commit'): None}
    records_was_running = True
    #: libvirt streams only into the live layer: an intermediate child is
    #: committed into the snapshot while the domain runs
    intermediate_direction = {True: 'commit', False: 'stream'}
    create_crash_steps = ('prepare', 'pause', 'snapshot', 'resume')
    merge_crash_steps = ('prepare', 'merge', 'pause', 'snapshot', 'resume',
                         'reparent', 'delete', 'purge')
    stream_crash_steps = ('pause', 'resume')

    def __init__(self, tmp_path):
        import libvirt
        self.libvirt = libvirt
        super().__init__(tmp_path)
        self.conn = libvirt.open(libvirtd.URI)
        self.dom = None
        self.uuid = str(uuid.uuid4())
        self.targets = ()

    def make_vm(self, targets=('vda',), guest_agent=False):
        disks = []
        for target in targets:
            base = os.path.join(self.imgdir, '%s-base.qcow2' % target)
            images.create_base(base, SIZE)
            self.bases[target] = base
            disks.append({'driver': 'libvirt', 'domain': self.uuid,
                          'target': target, 'path': base})
        self.targets = tuple(targets)
        self.dom = self.conn.defineXML(libvirtd.domain_xml(
            'lscontract-%s' % self.uuid[:8], self.uuid,
            [(d['target'], d['path']) for d in disks],
            guest_agent=guest_agent))
        return disks

    def start(self, disks):
        self.dom.create()

    def stop(self):
        if self.dom is not None and self.dom.isActive():
            self.dom.destroy()

    def pause(self):
        self.dom.suspend()

    def status(self):
        state = self.dom.state()[0]
        return {self.libvirt.VIR_DOMAIN_RUNNING: 'running',
                self.libvirt.VIR_DOMAIN_PAUSED: 'paused'}.get(
                    state, 'shut off')

    def check_online_create(self, rec):
        # QEMU's own STOP/RESUME timestamps reached the driver.
        assert 'qemu_pause_ms' in rec.steps[-1]['detail'], rec.steps
        # Listening to QEMU's events does not mark the domain tainted.
        log = '/var/log/libvirt/qemu/%s.log' % self.dom.name()
        if os.path.exists(log):
            with open(log) as f:
                assert 'tainted' not in f.read()

    def check_no_agent_reason(self, reason):
        assert 'not connected' in reason, reason

    def check_idle(self, disk):
        assert self.dom.blockJobInfo(disk['target'], 0) == {}

    def check_thaw_without_agent(self, disk):
        # No agent to ask: the driver's LibvirtError.
        try:
            self.driver.thaw_guest(disk)
        except Exception as exc:
            assert type(exc).__name__ == 'LibvirtError', exc
        else:
            raise AssertionError('thaw_guest reached no agent yet '
                                 'did not fail')

    def _chain(self, target, flags):
        root = ET.fromstring(self.dom.XMLDesc(flags))
        for disk in root.findall('./devices/disk'):
            if disk.find('target').get('dev') != target:
                continue
            files, elem = [], disk
            while elem is not None:
                source = elem.find('source')
                if source is None or not source.get('file'):
                    break
                files.append(source.get('file'))
                elem = elem.find('backingStore')
            return files
        raise AssertionError('no disk %s' % target)

    def live_chain(self, disk):
        return self._chain(disk['target'], 0)

    def defined_chain(self, disk):
        return self._chain(disk['target'],
                           self.libvirt.VIR_DOMAIN_XML_INACTIVE)[0]

    def _io(self, disk, command):
        import libvirt_qemu
        device = _LIBVIRT_DEVICE % self.targets.index(disk['target'])
        out = libvirt_qemu.qemuMonitorCommand(
            self.dom, 'qemu-io -d %s "%s"' % (device, command),
            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        if out and ('error' in out.lower() or 'fail' in out.lower()):
            raise AssertionError('qemu-io %s: %s' % (command, out.strip()))

    def _write_online(self, disk, pattern, offset, length):
        self._io(disk, 'write -P 0x%02x %d %d' % (pattern, offset, length))

    def settle(self, disks=()):
        if self.status() == 'running':
            for disk in disks:
                self._io(disk, 'flush')

    def cleanup(self):
        try:
            if self.dom is not None:
                self.stop()
                self.dom.undefine()
        finally:
            self.conn.close()
            conn = getattr(self.driver, '_conn', None)
            if conn is not None:
                conn.close()


HARNESSES = {'fake': FakeHarness, 'qemu': QemuHarness,
             'libvirt': LibvirtHarness}
