"""The chaos run on libvirt domains (``tools/chaos --driver libvirt``).

The agents run ``[agent] driver = libvirt``; each VM is a persistent TCG
domain (:func:`livesnap_tools.libvirtd.domain_xml`, one disk, vda) that
libvirtd owns.  The tenants write through libvirt (HMP ``qemu-io`` on the
disk's device, as tests/functional/libvirt_vm.py does), so
:class:`Observer` stands in for the load benchmark's QMP observer; it does
not see QEMU's STOP/RESUME events (libvirt holds the only monitor), so the
run gives no pause figure on this driver.

The fault ``restart_libvirtd`` kills libvirtd (SIGKILL) and starts it
again: the domains run on, and each agent must reconnect by itself.  It is
skipped while a process that is not the run's is connected to this
libvirtd (another user's tests; ``virt-admin``): the domains of others run
on through a restart, their callers would not.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid as uuid_mod
import xml.etree.ElementTree as ET

from livesnap_tools import libvirtd

#: the block backend of vda's device (libvirt names it virtio-disk0)
_DEVICE = '/machine/peripheral/virtio-disk0/virtio-backend'
#: the agents' configuration on this driver
AGENT_EXTRA = ('[agent]\ndriver = libvirt\n'
               '[libvirt]\nuri = %s\njob_poll_interval = 0.05\n'
               % libvirtd.URI)


class Domain(object):
    """One run's VM as a libvirt domain (the run's ``spec['vm']``)."""

    def __init__(self, name, image, observer):
        self.name = name
        self.image = image
        self.observer = observer
        self.uuid = str(uuid_mod.uuid4())
        self.domain_name = 'lsc-%s-%s' % (name, self.uuid[:8])
        self.pidfile = '/run/libvirt/qemu/%s.pid' % self.domain_name

    def kill(self):
        """Destroy and undefine the domain (the end of the run)."""
        try:
            self.observer.undefine(self.name)
        except Exception:  # noqa - already gone
            pass

    @property
    def pid(self):
        """QEMU's pid (libvirt's pid file), or None."""
        try:
            with open(self.pidfile) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    @pid.setter
    def pid(self, value):
        pass  # libvirt's pid file says


class Observer(object):
    """The tenants' and the checks' view of the domains, through libvirt
    (a connection opened again when libvirtd was restarted).
    """

    def __init__(self):
        self._conn = None
        self._lock = threading.Lock()
        self.domains = {}
        #: times libvirtd had gone away and the run started it again
        self.restarts = 0

    def _connection(self):
        import libvirt
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
            self._conn = libvirt.open(libvirtd.URI)
            return self._conn

    def _call(self, fn):
        """``fn(connection)``, retried for 30 s while libvirtd does not
        answer; a libvirtd that went away (stopped by another user of the
        machine's libvirtd, not by a fault) is started again.
        """
        import libvirt
        for attempt in range(60):
            try:
                return fn(self._connection())
            except libvirt.libvirtError:
                if attempt == 59:
                    raise
                with self._lock:
                    self._conn = None
                if attempt % 10 == 9 and libvirtd._pid('libvirtd') is None:
                    print('chaos: libvirtd is gone; starting it again',
                          file=sys.stderr)
                    self.restarts += 1
                    try:
                        libvirtd.ensure_running(30)
                    except Exception:  # noqa - tried again
                        pass
                time.sleep(0.5)

    def _dom(self, conn, name):
        return conn.lookupByUUIDString(self.domains[name].uuid)

    def define(self, dom):
        self.domains[dom.name] = dom
        xml = libvirtd.domain_xml(dom.domain_name, dom.uuid,
                                  [('vda', dom.image)])
        self._call(lambda c: c.defineXML(xml).create())

    def undefine(self, name):
        def gone(conn):
            d = self._dom(conn, name)
            if d.isActive():
                d.destroy()
            d.undefine()
        self._call(gone)

    def start(self, name):
        self._call(lambda c: self._dom(c, name).create())

    def _io(self, name, command):
        import libvirt_qemu

        def io(conn):
            return libvirt_qemu.qemuMonitorCommand(
                self._dom(conn, name), 'qemu-io -d %s "%s"'
                % (_DEVICE, command),
                libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        out = self._call(io)
        if out and ('error' in out.lower() or 'fail' in out.lower()):
            raise IOError('qemu-io %s: %s' % (command, out.strip()))

    def write(self, name, pattern, offset, length):
        self._io(name, 'write -P 0x%02x %d %d' % (pattern, offset, length))

    def flush(self, name):
        self._io(name, 'flush')

    def status(self, name):
        import libvirt
        state = self._call(lambda c: self._dom(c, name).state()[0])
        return {libvirt.VIR_DOMAIN_RUNNING: 'running',
                libvirt.VIR_DOMAIN_PAUSED: 'paused'}.get(state, str(state))

    def top_image(self, name):
        """The file vda's QEMU writes to (the live XML's source)."""
        xml = self._call(lambda c: self._dom(c, name).XMLDesc(0))
        for d in ET.fromstring(xml).findall('./devices/disk'):
            if d.find('target').get('dev') == 'vda':
                return d.find('source').get('file')
        raise IOError('%s has no vda' % name)

    def all_windows(self, name):
        return []

    def connect(self, name, path=None):
        pass

    def reconnect(self, name, path=None):
        pass

    def close(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa - libvirtd may be gone
                pass
            self._conn = None


def foreign_clients(ours):
    """Pids of the processes connected to libvirtd that are not in
    ``ours`` (``virt-admin``; None if it cannot say).
    """
    try:
        out = subprocess.run(
            ['virt-admin', 'srv-clients-list', 'libvirtd'],
            capture_output=True, text=True, timeout=20,
            stdin=subprocess.DEVNULL).stdout
        pids = []
        for line in out.splitlines():
            cid = line.split()[0] if line.split() else ''
            if not cid.isdigit():
                continue
            info = subprocess.run(
                ['virt-admin', 'client-info', 'libvirtd', cid],
                capture_output=True, text=True, timeout=20,
                stdin=subprocess.DEVNULL).stdout
            m = re.search(r'unix_process_id\s*:\s*(\d+)', info)
            if m and int(m.group(1)) not in ours:
                pids.append(int(m.group(1)))
        return pids
    except (OSError, subprocess.SubprocessError):
        return None


def foreign_domains(observer):
    """Names of the active domains on this libvirtd that are not the
    run's.
    """
    ours = {d.uuid for d in observer.domains.values()}
    doms = observer._call(lambda c: c.listAllDomains(0))
    return [d.name() for d in doms if d.isActive()
            and d.UUIDString() not in ours]


def restart_libvirtd(timeout=60):
    """SIGKILL libvirtd and start it again (the domains run on)."""
    pid = libvirtd._pid('libvirtd')
    if pid is None or not libvirtd._alive(pid):
        raise RuntimeError('libvirtd is not running (no pid file)')
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while libvirtd._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    libvirtd.ensure_running(timeout)
