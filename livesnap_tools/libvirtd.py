"""Start libvirtd without systemd (tests, benchmarks, demos), stop what was
started, and define small TCG test domains.

``ensure_running()`` reuses a libvirtd that already answers at
``qemu:///system``; otherwise (as root, with the daemons installed) it runs
``virtlogd -d`` and ``libvirtd -d`` and waits until ``virsh version``
answers.  ``stop()`` ends only the daemons this process started, by the
pids they wrote.  Tests skip when libvirt cannot be had (not root, not
installed, no libvirt-python): see ``available()``.
"""

import os
import shutil
import signal
import subprocess
import time

URI = 'qemu:///system'
RUN_DIR = '/run/libvirt'
#: the pid files the daemons write when started as root
PID_FILES = {'virtlogd': '/run/virtlogd.pid', 'libvirtd': '/run/libvirtd.pid'}

_started = []


def _answers():
    if shutil.which('virsh') is None:
        return False
    try:
        proc = subprocess.run(['virsh', '-c', URI, 'version'],
                              capture_output=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def why_unavailable():
    """None if libvirt can be used here, else the reason to skip."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return 'libvirt-python is not installed (./tools/ensure-env as root)'
    if _answers():
        return None
    if os.geteuid() != 0:
        return 'libvirtd is not running and only root may start it'
    for daemon in ('libvirtd', 'virtlogd', 'virsh'):
        if shutil.which(daemon) is None:
            return '%s is not installed (./tools/ensure-env as root)' % daemon
    return None


def _pid(name):
    try:
        with open(PID_FILES[name]) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid):
    """True if ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != 'Z'


def ensure_running(timeout=60.0):
    """Make libvirtd answer at ``qemu:///system``, starting it if needed.

    :raises RuntimeError: it did not come up within ``timeout`` seconds.
    """
    if _answers():
        return
    os.makedirs(RUN_DIR, exist_ok=True)
    for name in ('virtlogd', 'libvirtd'):
        pid = _pid(name)
        if pid is not None and _alive(pid):
            continue
        subprocess.run([name, '-d'], check=True, timeout=30,
                       stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while _pid(name) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = _pid(name)
        if pid is not None:
            _started.append((name, pid))
    deadline = time.monotonic() + timeout
    while not _answers():
        if time.monotonic() > deadline:
            raise RuntimeError('libvirtd did not answer at %s within %s s'
                               % (URI, timeout))
        time.sleep(0.2)


def stop():
    """Stop the daemons ``ensure_running`` started (newest first)."""
    while _started:
        name, pid = _started.pop()
        if not _alive(pid):
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


DOMAIN_XML = """
<domain type='qemu'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>%(emulator)s</emulator>
%(disks)s%(channel)s    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
"""

DISK_XML = """    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%(path)s'/>
      <target dev='%(target)s' bus='virtio'/>
    </disk>
"""


#: the guest agent's virtio-serial channel (libvirt makes its socket)
GUEST_AGENT_XML = """    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
"""


def domain_xml(name, uuid, disks, guest_agent=False):
    """A TCG domain (machine ``pc``, 64 MiB, no graphics) with the qcow2
    ``disks`` (``[(target, path)]``) on virtio.  It has nothing to boot
    and sits in its firmware: enough for disk snapshots.  QEMU runs as
    root (a static DAC label), so the images may live anywhere.  With
    ``guest_agent`` it has the guest agent's channel, which no agent in
    the guest ever answers on.
    """
    return DOMAIN_XML % {
        'channel': GUEST_AGENT_XML if guest_agent else '',
        'name': name, 'uuid': uuid,
        'emulator': shutil.which('qemu-system-x86_64') or
        '/usr/bin/qemu-system-x86_64',
        'disks': ''.join(DISK_XML % {'target': t, 'path': p}
                         for t, p in disks)}
