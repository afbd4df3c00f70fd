"""A real Linux guest that writes sequence-stamped blocks, for tests.

The guest is the distribution's cloud kernel (``/boot/vmlinuz-*-cloud-amd64``,
NVMe built in) with a tiny busybox initramfs built here and cached.  Its
``/init`` mounts proc/sys/devtmpfs, waits for ``/dev/nvme0n1`` and then
writes block ``i`` (4 KiB at offset ``i * 4096``) holding the header
``LSSEQ %08d`` with its own sequence number ``i``, each write fsynced
(``dd conv=sync,fsync``: the NVMe flush reaches QEMU) before the guest
prints ``LSWROTE i`` on the serial console.  It goes on until it has written
``max_blocks`` blocks or receives a line on its second serial port (``ttyS1``,
a unix socket on the host: :meth:`LinuxGuest.tell_stop`), then prints
``LSDONE n`` and powers off (``poweroff -f``; with ``-no-reboot`` QEMU exits).

Because every block is durable before the next one is written, any
point-in-time copy of the disk (a snapshot) must hold a gap-free prefix
0..k-1 of the sequence and nothing after it: :func:`read_sequence` and
:func:`gap_free_prefix` check that from outside.

Boot under TCG takes a few seconds; nothing here needs KVM.
"""

import glob
import gzip
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

from livesnap_tools import testvm

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
BLOCK = 4096
MAGIC = b"LSSEQ "
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

#: the guest's /init (busybox ash).  Kernel command-line words of the form
#: key=value that the kernel does not know reach init as environment
#: variables: ls_blocks (maximum number of blocks), ls_delay_ms (pause
#: between blocks), ls_first (first sequence number, default 0).
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
echo "LSBOOT up $(cut -d' ' -f1 /proc/uptime)"
n=0
while [ ! -b /dev/nvme0n1 ]; do
    n=$((n + 1))
    if [ $n -gt 600 ]; then
        echo "LSERROR no /dev/nvme0n1"; poweroff -f
    fi
    sleep 0.1
done
blocks=${ls_blocks:-200}
delay=${ls_delay_ms:-0}
i=${ls_first:-0}
rm -f /tmp/stop
if [ -c /dev/ttyS1 ]; then
    stty -F /dev/ttyS1 raw -echo 2>/dev/null
    ( read -r line </dev/ttyS1; echo "LSSTOP $line"; touch /tmp/stop ) &
fi
echo "LSREADY blocks=$blocks delay=$delay up $(cut -d' ' -f1 /proc/uptime)"
while [ "$i" -lt "$blocks" ] && [ ! -e /tmp/stop ]; do
    if ! printf 'LSSEQ %08d\n' "$i" | dd of=/dev/nvme0n1 bs=4096 \
            seek="$i" count=1 conv=sync,fsync,notrunc 2>/tmp/dd.err; then
        echo "LSERROR dd $i: $(cat /tmp/dd.err)"
        break
    fi
    echo "LSWROTE $i"
    i=$((i + 1))
    if [ "$delay" -gt 0 ]; then
        usleep $((delay * 1000))
    fi
done
sync
echo "LSDONE $i up $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"""


#: the quiesce guest's /init: loads virtio-serial, mounts the ext4 file
#: system on the NVMe disk, starts qemu-ga on the guest agent's port and
#: keeps writing files (no fsync: dirty pages and journal commits are in
#: flight whenever the host snapshots).  Prints ``LSREADY`` once qemu-ga
#: runs and ``LSFILES n`` every 10 files.
QGA_INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
        virtio_pci virtio_console; do
    insmod /modules/$m.ko || echo "LSWARN insmod $m failed"
done
n=0
while [ ! -b /dev/nvme0n1 ] || ! ls /dev/vport*p* >/dev/null 2>&1; do
    n=$((n + 1))
    if [ $n -gt 600 ]; then
        echo "LSERROR no /dev/nvme0n1 or virtio port: $(ls /dev)"
        poweroff -f
    fi
    sleep 0.1
done
port=$(ls /dev/vport*p* | head -n 1)
mkdir -p /mnt /run /var/run
mount -t ext4 /dev/nvme0n1 /mnt || { echo "LSERROR mount"; poweroff -f; }
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run -f /run/qga.pid \
    >/tmp/qga.log 2>&1 &
sleep 1
echo "LSREADY port=$port"
i=0
while [ ! -e /tmp/stop ]; do
    dd if=/dev/urandom of=/mnt/f$((i % 50)) bs=4096 count=8 2>/dev/null
    mkdir -p /mnt/d$((i % 7)) && echo "$i" > /mnt/d$((i % 7))/n$i
    rm -f /mnt/d$(((i + 3) % 7))/n$((i - 20))
    i=$((i + 1))
    if [ $((i % 10)) -eq 0 ]; then echo "LSFILES $i"; fi
done
"""

#: the libvirt guest's /init: the quiesce guest's, on a virtio disk
#: (``/dev/vda``: libvirt 9 has no emulated NVMe), appending to the file
#: ``/seq`` one 15-byte line ``LSSEQ %08d`` per sequence number, each
#: fsynced before the guest prints ``LSWROTE i``, and rewriting other files
#: without fsync in between (dirty pages in flight).  Any point-in-time
#: copy of the file system, once its journal is replayed (or without
#: replay if it was frozen), holds a gap-free prefix of the sequence in
#: ``/seq``: :func:`read_fs_sequence`.
LIBVIRT_QGA_INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev \
        virtio_pci virtio_console virtio_blk; do
    insmod /modules/$m.ko || echo "LSWARN insmod $m failed"
done
n=0
while [ ! -b /dev/vda ] || ! ls /dev/vport*p* >/dev/null 2>&1; do
    n=$((n + 1))
    if [ $n -gt 600 ]; then
        echo "LSERROR no /dev/vda or virtio port: $(ls /dev)"
        poweroff -f
    fi
    sleep 0.1
done
port=$(ls /dev/vport*p* | head -n 1)
mkdir -p /mnt /run /var/run
mount -t ext4 /dev/vda /mnt || { echo "LSERROR mount"; poweroff -f; }
/usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run -f /run/qga.pid \
    >/tmp/qga.log 2>&1 &
sleep 1
echo "LSREADY port=$port"
i=0
while [ ! -e /tmp/stop ]; do
    if ! printf 'LSSEQ %08d\n' "$i" | dd of=/mnt/seq bs=15 seek="$i" \
            count=1 conv=notrunc,fsync 2>/tmp/dd.err; then
        echo "LSERROR dd $i: $(cat /tmp/dd.err)"
        break
    fi
    echo "LSWROTE $i"
    dd if=/dev/urandom of=/mnt/f$((i % 20)) bs=4096 count=4 2>/dev/null
    i=$((i + 1))
done
"""

#: kernel modules the quiesce guest loads (virtio-serial)
QGA_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev",
               "virtio_pci_modern_dev", "virtio_pci", "virtio_console")
#: and the libvirt guest (its disk on virtio-blk too)
LIBVIRT_QGA_MODULES = QGA_MODULES + ("virtio_blk",)
QGA_BINARY = "/usr/sbin/qemu-ga"


def qga_missing(modules=QGA_MODULES):
    """Why the quiesce guest cannot run here (a string), or None."""
    why = missing()
    if why:
        return why
    if not os.path.exists(QGA_BINARY):
        return "no %s (apt-get install qemu-guest-agent)" % QGA_BINARY
    for tool in ("mkfs.ext4", "dumpe2fs", "e2fsck", "debugfs"):
        if shutil.which(tool) is None:
            return "no %s (e2fsprogs)" % tool
    if _module_paths(modules) is None:
        return "no virtio modules %s for the cloud kernel" % (modules,)
    return None


def _module_paths(modules=QGA_MODULES):
    kernel = find_kernel()
    if kernel is None:
        return None
    release = os.path.basename(kernel)[len("vmlinuz-"):]
    found = []
    for name in modules:
        hits = glob.glob("/lib/modules/%s/kernel/drivers/**/%s.ko"
                         % (release, name), recursive=True)
        if not hits:
            return None
        found.append(hits[0])
    return found


def _libraries(binary):
    """The shared libraries ``binary`` loads (``ldd``), absolute paths."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                         check=True).stdout
    return sorted(set(re.findall(r"(/\S+\.so[.\d]*)", out)))


def build_qga_initramfs(cache_dir=None, init_script=QGA_INIT_SCRIPT,
                        modules=QGA_MODULES, prefix="qga"):
    """Build (once) the quiesce guest's initramfs: busybox, qemu-ga and
    its libraries, the virtio ``modules``; returns its path.  (The
    libvirt guest's: ``init_script=LIBVIRT_QGA_INIT_SCRIPT,
    modules=LIBVIRT_QGA_MODULES``.)
    """
    extra = [(QGA_BINARY, open(QGA_BINARY, "rb").read())]
    for lib in _libraries(QGA_BINARY):
        with open(os.path.realpath(lib), "rb") as f:
            extra.append((lib, f.read()))
    for mod in _module_paths(modules):
        with open(mod, "rb") as f:
            extra.append(("/modules/" + os.path.basename(mod), f.read()))
    return build_initramfs(cache_dir, init_script=init_script,
                           extra=extra, prefix=prefix)


class GuestError(testvm.TestVMError):
    pass


def find_kernel():
    """Path of the newest ``/boot/vmlinuz-*-cloud-amd64``, or None."""
    found = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
    return found[-1] if found else None


def find_busybox():
    """Path of a statically linked busybox, or None."""
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path) and _is_static(path):
            return path
    return None


def _is_static(path):
    """True if the ELF64 file at ``path`` has no PT_INTERP segment."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if hdr[:5] != b"\x7fELF\x02":
                return False
            phoff, = struct.unpack_from("<Q", hdr, 32)
            phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except (OSError, struct.error):
        return False
    return not any(struct.unpack_from("<I", table, i * phentsize)[0] == 3
                   for i in range(phnum))


def missing():
    """Why the guest cannot run here (a string), or None if it can."""
    if find_kernel() is None:
        return ("no /boot/vmlinuz-*-cloud-amd64 (apt-get install "
                "--no-install-recommends linux-image-cloud-amd64, or run "
                "tools/ensure-env as root)")
    if find_busybox() is None:
        return "no static busybox (apt-get install busybox-static)"
    if shutil.which(QEMU) is None:
        return "no %s" % QEMU
    return None


def default_cache_dir():
    return os.path.join(os.path.expanduser("~"), ".cache", "livesnap-guest")


def _cpio_newc(entries):
    """A newc cpio archive from ``(name, mode, data, rdev)`` entries."""
    out = bytearray()
    ino = 1
    now = int(time.time())
    for name, mode, data, rdev in list(entries) + [("TRAILER!!!", 0, b"",
                                                     (0, 0))]:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08x" % v for v in (
            ino, mode, 0, 0, 1, now, len(data), 0, 0, rdev[0], rdev[1],
            len(name_b), 0))
        out += hdr.encode() + name_b
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
        ino += 1
    return bytes(out)


def build_initramfs(cache_dir=None, busybox=None, init_script=INIT_SCRIPT,
                    extra=(), prefix="writer"):
    """Build (once) the writer initramfs; returns its path.

    The archive is written in Python (no root, mknod or cpio binary
    needed) and cached under ``cache_dir`` by a digest of the init script
    and the busybox binary.
    """
    busybox = busybox or find_busybox()
    if busybox is None:
        raise GuestError("no static busybox found")
    cache_dir = cache_dir or default_cache_dir()
    with open(busybox, "rb") as f:
        bb = f.read()
    digest = hashlib.sha256(init_script.encode() + bb)
    for name, data in extra:
        digest.update(name.encode() + data)
    digest = digest.hexdigest()[:16]
    path = os.path.join(cache_dir, "%s-%s.cpio.gz" % (prefix, digest))
    if os.path.exists(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    d, f, c = 0o040755, 0o100755, 0o020600
    entries = [
        ("bin", d, b"", (0, 0)), ("sbin", d, b"", (0, 0)),
        ("dev", d, b"", (0, 0)), ("proc", d, b"", (0, 0)),
        ("sys", d, b"", (0, 0)), ("tmp", 0o041777, b"", (0, 0)),
        ("dev/console", c, b"", (5, 1)), ("dev/null", 0o020666, b"", (1, 3)),
        ("bin/busybox", f, bb, (0, 0)),
        ("bin/sh", 0o120777, b"busybox", (0, 0)),
        ("init", f, init_script.encode(), (0, 0)),
    ]
    dirs = {"bin", "sbin", "dev", "proc", "sys", "tmp"}
    for name, data in extra:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in dirs:
                dirs.add(parent)
                entries.append((parent, d, b"", (0, 0)))
        entries.append(("/".join(parts), f, data, (0, 0)))
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(gzip.compress(_cpio_newc(entries), 6))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


class LinuxGuest(testvm.TestVM):
    """A TCG QEMU booting the writer guest with ``image`` on NVMe.

    The disk is ``-blockdev driver=qcow2,node-name=disk0,...`` attached with
    ``-device nvme,drive=disk0,serial=d0``, so livesnap finds it by image
    file name just as on the ``-M none`` test VM.

    :param image: qcow2 image (its first ``max_blocks`` * 4 KiB are written).
    :param qmp_socket: path for the QMP unix socket.
    :param serial_log: file receiving the guest console (ttyS0).
    :param max_blocks: the guest stops by itself after this many blocks.
    :param delay_ms: pause between blocks inside the guest.
    """

    def __init__(self, image, qmp_socket, serial_log, max_blocks=200,
                 delay_ms=0, first=0, memory=256, kernel=None, initrd=None,
                 cache_dir=None, pidfile=None, control_socket=None,
                 name="guest", timeout=30.0, qga_socket=None):
        if len(qmp_socket.encode()) > testvm.MAX_SOCKET_PATH:
            raise GuestError("QMP socket path too long: %s" % qmp_socket)
        self.image = os.path.abspath(image)
        self.qmp_socket = qmp_socket
        self.serial_log = os.path.abspath(serial_log)
        self.max_blocks = max_blocks
        self.delay_ms = delay_ms
        self.first = first
        self.memory = memory
        self.kernel = kernel or find_kernel()
        if self.kernel is None:
            raise GuestError(missing())
        self.initrd = initrd or build_initramfs(cache_dir)
        self.pidfile = pidfile or qmp_socket + ".pid"
        self.control_socket = control_socket or qmp_socket + ".ctl"
        if len(self.control_socket.encode()) > testvm.MAX_SOCKET_PATH:
            raise GuestError("control socket path too long")
        self.name = name
        self.timeout = timeout
        self.qga_socket = qga_socket
        self.pid = None
        self.started_at = None

    def command(self):
        # no_timer_check: under TCG on a loaded host the kernel's IO-APIC
        # timer check can fail and panic ("IO-APIC + timer doesn't work").
        append = ("console=ttyS0 panic=-1 quiet loglevel=3 no_timer_check "
                  "ls_blocks=%d ls_delay_ms=%d ls_first=%d"
                  % (self.max_blocks, self.delay_ms, self.first))
        return [
            QEMU, "-name", self.name, "-accel", "tcg", "-M", "pc",
            "-m", str(self.memory), "-vga", "none", "-display", "none",
            "-nodefaults", "-no-user-config",
            "-kernel", self.kernel, "-initrd", self.initrd,
            "-append", append,
            "-serial", "file:%s" % self.serial_log,
            "-serial", "unix:%s,server=on,wait=off" % self.control_socket,
            "-qmp", "unix:%s,server=on,wait=off" % self.qmp_socket,
            "-blockdev",
            "driver=qcow2,node-name=disk0,file.driver=file,"
            "file.filename=%s" % self.image.replace(",", ",,"),
            "-device", "nvme,drive=disk0,serial=d0",
            "-no-reboot", "-daemonize", "-pidfile", self.pidfile] + (
            self._qga_args() if self.qga_socket else [])

    def _qga_args(self):
        """A virtio-serial port ``org.qemu.guest_agent.0`` whose host end
        is the unix socket ``qga_socket`` (as a cloud's VMs have it).
        """
        return [
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", "socket,id=qga0,path=%s,server=on,wait=off"
            % self.qga_socket,
            "-device", "virtserialport,bus=vser0.0,chardev=qga0,"
            "name=org.qemu.guest_agent.0"]

    # -- life cycle (launch, kill, shutdown, QMP: see testvm.TestVM) --------
    def _files(self):
        return super()._files() + [self.control_socket] + (
            [self.qga_socket] if self.qga_socket else [])

    def start(self):
        """Launch QEMU (the guest boots in the background).  Returns self."""
        if os.path.lexists(self.serial_log):
            os.unlink(self.serial_log)
        self.started_at = time.monotonic()
        return super().start()

    # -- console ------------------------------------------------------------
    def log(self):
        try:
            with open(self.serial_log, "rb") as f:
                return f.read().decode("ascii", "replace")
        except FileNotFoundError:
            return ""

    def written(self):
        """Number of blocks the guest has reported as written (fsynced)."""
        found = re.findall(r"^LSWROTE (\d+)", self.log(), re.M)
        return int(found[-1]) + 1 - self.first if found else 0

    def done(self):
        """The block count of ``LSDONE n`` (next sequence number), or None."""
        m = re.search(r"^LSDONE (\d+)", self.log(), re.M)
        return int(m.group(1)) if m else None

    def errors(self):
        return re.findall(r"^LSERROR .*$", self.log(), re.M)

    def _wait_for(self, what, predicate, timeout):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if self.errors():
                raise GuestError("guest error: %s" % self.errors())
            if not self.alive() and not predicate():
                raise GuestError("guest gone while waiting for %s; "
                                 "console:\n%s" % (what, self.log()[-2000:]))
            if time.monotonic() > deadline:
                raise GuestError("timed out after %ss waiting for %s; "
                                 "console:\n%s"
                                 % (timeout, what, self.log()[-2000:]))
            time.sleep(0.1)

    def wait_ready(self, timeout=180):
        """Wait until the guest has found its disk; returns seconds since
        start.
        """
        self._wait_for("LSREADY", lambda: "LSREADY" in self.log(), timeout)
        return time.monotonic() - self.started_at

    def wait_written(self, count, timeout=180):
        """Wait until the guest reports at least ``count`` blocks written;
        returns the number reported.
        """
        return self._wait_for("%d blocks" % count,
                              lambda: self.written() >= count and
                              self.written(), timeout)

    def tell_stop(self):
        """Ask the guest to stop writing (it then powers off)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.control_socket)
            s.sendall(b"stop\n")
            # Keep the connection until the guest has read the line.
            deadline = time.monotonic() + self.timeout
            while ("LSSTOP" not in self.log() and self.alive()
                   and time.monotonic() < deadline):
                time.sleep(0.05)

    def wait_poweroff(self, timeout=180):
        """Wait until QEMU has exited; returns the LSDONE count (or None)."""
        if not self._wait_gone(timeout):
            raise GuestError("guest still running after %ss; console:\n%s"
                             % (timeout, self.log()[-2000:]))
        self.kill()  # clean up sockets and pidfile
        return self.done()

    def stop(self, timeout=180):
        """Stop the writer and wait for the power-off; returns LSDONE n."""
        self.tell_stop()
        return self.wait_poweroff(timeout)


#: the libvirt guest's domain: TCG, the kernel and initramfs booted
#: directly, the disk vda on virtio, the console in a file, the guest
#: agent's virtio-serial channel (libvirt makes and connects its socket),
#: QEMU as root (a static DAC label, as livesnap_tools.libvirtd's domains)
LIBVIRT_DOMAIN_XML = """
<domain type='qemu'>
  <name>%(name)s</name>
  <uuid>%(uuid)s</uuid>
  <memory unit='MiB'>%(memory)d</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%(kernel)s</kernel>
    <initrd>%(initrd)s</initrd>
    <cmdline>%(cmdline)s</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%(emulator)s</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='%(image)s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='%(serial_log)s'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
"""


class LibvirtGuest(LinuxGuest):
    """The libvirt guest (``LIBVIRT_QGA_INIT_SCRIPT``) as a persistent
    libvirt domain on ``image`` (disk ``vda``); the console helpers are
    LinuxGuest's.  ``kill`` destroys and undefines the domain.
    """

    def __init__(self, image, serial_log, uri, name="lvguest", memory=256,
                 cache_dir=None, timeout=30.0):
        import libvirt
        import uuid as uuid_mod
        self._libvirt = libvirt
        self.image = os.path.abspath(image)
        self.serial_log = os.path.abspath(serial_log)
        self.first = 0
        self.timeout = timeout
        self.kernel = find_kernel()
        if self.kernel is None:
            raise GuestError(missing())
        self.initrd = build_qga_initramfs(
            cache_dir, init_script=LIBVIRT_QGA_INIT_SCRIPT,
            modules=LIBVIRT_QGA_MODULES, prefix="lvqga")
        self.uuid = str(uuid_mod.uuid4())
        self.name = "%s-%s" % (name, self.uuid[:8])
        self.started_at = None
        self.conn = libvirt.open(uri)
        self.dom = self.conn.defineXML(LIBVIRT_DOMAIN_XML % {
            "name": self.name, "uuid": self.uuid, "memory": memory,
            "kernel": self.kernel, "initrd": self.initrd,
            "cmdline": "console=ttyS0 panic=-1 quiet loglevel=3 "
                       "no_timer_check",
            "emulator": shutil.which(QEMU) or "/usr/bin/" + QEMU,
            "image": self.image, "serial_log": self.serial_log})

    def start(self):
        """Start the domain (the guest boots in the background)."""
        if os.path.lexists(self.serial_log):
            os.unlink(self.serial_log)
        self.started_at = time.monotonic()
        self.dom.create()
        return self

    def alive(self):
        try:
            return bool(self.dom.isActive())
        except self._libvirt.libvirtError:
            return False

    def status(self):
        state = self.dom.state()[0]
        return {self._libvirt.VIR_DOMAIN_RUNNING: "running",
                self._libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, state)

    def kill(self):
        """Destroy (if it runs) and undefine the domain."""
        try:
            if self.alive():
                self.dom.destroy()
            self.dom.undefine()
        except self._libvirt.libvirtError:
            pass


# -- the quiesce guests' set-up (test_guest_quiesce.py, test_libvirt_guest.py)
def ext4_image(path, size=64 * 1024 * 1024):
    """A qcow2 base at ``path`` holding a fresh ext4 file system (with
    journal).  :returns: ``path``.
    """
    with tempfile.TemporaryDirectory(prefix="ls-ext4-") as tmp:
        raw = os.path.join(tmp, "fs.raw")
        with open(raw, "wb") as f:
            f.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-j", raw], check=True,
                       stdin=subprocess.DEVNULL)
        subprocess.run([QEMU_IMG, "convert", "-f", "raw", "-O", "qcow2",
                        raw, path], check=True, stdin=subprocess.DEVNULL)
    return path


def fs_state(image):
    """(dumpe2fs -h features, e2fsck -fn return code and output) of the
    file system in ``image`` (its whole chain), read from a raw copy.
    """
    with tempfile.TemporaryDirectory(prefix="ls-fsck-") as tmp:
        raw = os.path.join(tmp, "snap.raw")
        subprocess.run([QEMU_IMG, "convert", "-U", "-f", "qcow2", "-O",
                        "raw", image, raw], check=True,
                       stdin=subprocess.DEVNULL)
        head = subprocess.run(["dumpe2fs", "-h", raw], capture_output=True,
                              text=True, check=True).stdout
        features = [line for line in head.splitlines()
                    if line.startswith("Filesystem features:")][0]
        fsck = subprocess.run(["e2fsck", "-fn", raw], capture_output=True,
                              text=True)
        return features.split(), fsck.returncode, fsck.stdout + fsck.stderr


def create_snapshot(dep, server, name, quiesce, timeout=300):
    """A snapshot of ``server``'s disk ``vda`` through the REST API of
    the deployment ``dep``, waited for.  :returns: (the snapshot, its
    operation).
    """
    body = dep.ok("POST", "/v1/servers/%s/snapshots" % server,
                  {"snapshot": {"name": name, "disk": "vda",
                                "quiesce": quiesce}}, status=202)
    op = dep.wait_operation(body["operation"]["id"], timeout=timeout)
    snap = dep.ok("GET", "/v1/snapshots/%s" % body["snapshot"]["id"])
    return snap["snapshot"], op


def read_fs_sequence(image, replay=False):
    """The sequence numbers of the lines of ``/seq`` in the ext4 file
    system of ``image`` (its whole chain), the libvirt guest's file, read
    with ``debugfs`` from a raw copy; first the journal is replayed
    (``e2fsck -fy``) if ``replay``.  Entry ``i`` is the number on line
    ``i``, -1 for a line holding anything else.
    """
    with tempfile.TemporaryDirectory(prefix="ls-fsseq-") as tmp:
        raw = os.path.join(tmp, "fs.raw")
        subprocess.run([QEMU_IMG, "convert", "-U", "-f", "qcow2", "-O",
                        "raw", image, raw], check=True, timeout=300,
                       stdin=subprocess.DEVNULL)
        if replay:
            fsck = subprocess.run(["e2fsck", "-fy", raw],
                                  capture_output=True, text=True)
            if fsck.returncode > 1:
                raise GuestError("e2fsck -fy of %s: %d %s"
                                 % (image, fsck.returncode, fsck.stdout))
        out = subprocess.run(["debugfs", "-R", "cat /seq", raw],
                             capture_output=True, check=True).stdout
    seqs = []
    for i in range(0, len(out) - len(out) % 15, 15):
        m = re.match(rb"LSSEQ (\d{8})\n$", out[i:i + 15])
        seqs.append(int(m.group(1)) if m else -1)
    if len(out) % 15:
        seqs.append(-1)
    return seqs


# -- checking images ----------------------------------------------------------
def read_sequence(image, max_blocks=None, fmt="qcow2"):
    """The sequence numbers at the block offsets of ``image``.

    Returns a list: entry ``i`` is the number stamped in block ``i``, None
    for an all-zero block, -1 for a block holding anything else.  Trailing
    zero blocks are dropped.  Reads the guest's view (the whole backing
    chain) with ``qemu-img convert -U`` into a temporary raw file, so it
    works on images a QEMU has open (stop or flush that QEMU first).
    """
    with tempfile.TemporaryDirectory(prefix="ls-seq-") as tmp:
        raw = os.path.join(tmp, "disk.raw")
        proc = subprocess.run(
            [QEMU_IMG, "convert", "-U", "-f", fmt, "-O", "raw", image, raw],
            capture_output=True, text=True, timeout=300,
            stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise GuestError("qemu-img convert %s failed: %s"
                             % (image, proc.stderr.strip()))
        seqs = []
        with open(raw, "rb") as f:
            while max_blocks is None or len(seqs) < max_blocks:
                block = f.read(BLOCK)
                if not block:
                    break
                seqs.append(_parse_block(block))
    while seqs and seqs[-1] is None:
        seqs.pop()
    return seqs


def _parse_block(block):
    if block.count(0) == len(block):
        return None
    m = re.match(rb"LSSEQ (\d{8})\n", block)
    if m and block[15:].count(0) == len(block) - 15:
        return int(m.group(1))
    return -1


def gap_free_prefix(seqs, first=0):
    """``k`` if ``seqs`` is exactly ``first, first+1, ..., k-1`` from block
    ``first`` on (blocks before ``first`` ignored), else None.
    """
    tail = seqs[first:]
    for i, value in enumerate(tail):
        if value != first + i:
            return None
    return first + len(tail)


def describe(seqs, limit=8):
    """A short description of where ``seqs`` breaks the sequence."""
    bad = [(i, v) for i, v in enumerate(seqs) if v != i][:limit]
    return "%d blocks, first mismatches (offset, found): %s" % (len(seqs),
                                                              bad)
