"""A libvirt domain that stands in for testvm.TestVM in the tenant tests
(tests.functional.tenant, tree_check): a TCG domain with one disk, vda,
that the agent drives with ``[agent] driver = libvirt``.

The guest has nothing to boot; data goes in through QEMU's block layer
with HMP ``qemu-io`` on the disk's device (its live layer, whatever the
chain), passed through libvirt (which marks the domain tainted: these
domains are the tests' own).
"""

import uuid

from livesnap_tools import libvirtd

#: The agent's configuration for these tests (appended to ``[agent]``).
EXTRA = ('driver = libvirt\n'
         '[libvirt]\nuri = %s\njob_poll_interval = 0.05\n' % libvirtd.URI)

#: The block backend of vda's device (libvirt names it virtio-disk0).
_DEVICE = '/machine/peripheral/virtio-disk0/virtio-backend'


class LibvirtVM(object):
    """A persistent domain on ``image``; ``kill`` destroys and undefines
    it.
    """

    def __init__(self, image, name):
        import libvirt
        self._libvirt = libvirt
        self.conn = libvirt.open(libvirtd.URI)
        self.uuid = str(uuid.uuid4())
        self.name = '%s-%s' % (name, self.uuid[:8])
        self.dom = self.conn.defineXML(libvirtd.domain_xml(
            self.name, self.uuid, [('vda', image)]))

    def start(self):
        self.dom.create()
        return self

    def alive(self):
        return bool(self.dom.isActive())

    def status(self):
        state = self.dom.state()[0]
        return {self._libvirt.VIR_DOMAIN_RUNNING: 'running',
                self._libvirt.VIR_DOMAIN_PAUSED: 'paused'}.get(state, state)

    def _io(self, command):
        import libvirt_qemu
        out = libvirt_qemu.qemuMonitorCommand(
            self.dom, 'qemu-io -d %s "%s"' % (_DEVICE, command),
            libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        if out and ('error' in out.lower() or 'fail' in out.lower()):
            raise AssertionError('qemu-io %s: %s' % (command, out.strip()))

    def write(self, pattern, offset, length):
        """Write ``length`` bytes of ``pattern`` at ``offset`` into the
        disk's live layer, through the running QEMU.
        """
        self._io('write -P 0x%02x %d %d' % (pattern, offset, length))

    def flush(self):
        """Flush the disk so outside readers see the data."""
        self._io('flush')

    def shutdown(self):
        if self.dom.isActive():
            self.dom.destroy()

    def kill(self):
        try:
            self.shutdown()
            self.dom.undefine()
        finally:
            self.conn.close()
