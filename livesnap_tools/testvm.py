"""Boot and drive a disk-only QEMU for tests and ``tools/boot-vm``.

The VM is ``qemu-system-x86_64 -M none``: no guest, no devices, just QEMU's
block layer with one qcow2 disk (node ``disk0``) and a QMP socket.  It starts
in well under a second, and data is written through QEMU's block layer with
HMP ``qemu-io``, so snapshots and merges can be checked for real.

Data can be verified from outside with :func:`read_pattern_ok`.  A running
QEMU caches qcow2 metadata: :meth:`TestVM.flush` (or ``stop``) before reading
an image QEMU is writing.
"""

import json
import os
import re
import signal
import subprocess
import time

from agent.driver.qemu import qmp

QEMU = "qemu-system-x86_64"
QEMU_IO = "qemu-io"

#: unix socket paths are limited to 107 bytes
MAX_SOCKET_PATH = 107


class TestVMError(Exception):
    pass


def _pid_alive(pid):
    """True if ``pid`` runs (a zombie counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


class TestVM(object):
    """A ``-M none`` QEMU with one qcow2 disk.

    :param image: path of the qcow2 image to open as node ``disk0``.
    :param qmp_socket: path for the QMP unix socket (at most 107 bytes).
    :param pidfile: defaults to ``qmp_socket + '.pid'``.
    :param name: QEMU's ``-name``.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, image, qmp_socket, pidfile=None, name="vm",
                 timeout=10.0):
        if len(qmp_socket.encode()) > MAX_SOCKET_PATH:
            raise TestVMError("QMP socket path too long: %s" % qmp_socket)
        self.image = os.path.abspath(image)
        self.qmp_socket = qmp_socket
        self.pidfile = pidfile or qmp_socket + ".pid"
        self.name = name
        self.timeout = timeout
        self.pid = None

    # -- life cycle ---------------------------------------------------------
    def command(self):
        return [QEMU, "-name", self.name, "-M", "none", "-nodefaults",
                "-display", "none",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_socket,
                "-blockdev",
                "driver=qcow2,node-name=disk0,file.driver=file,"
                "file.filename=%s" % self.image.replace(",", ",,"),
                "-daemonize", "-pidfile", self.pidfile]

    def _files(self):
        """The sockets and files this QEMU owns, removed when it ends."""
        return [self.qmp_socket, self.pidfile]

    def start(self):
        """Launch QEMU and wait until QMP answers.  Returns self."""
        for stale in self._files():
            if os.path.lexists(stale):
                os.unlink(stale)
        # -daemonize: the launching process exits once QEMU is set up.
        proc = subprocess.run(self.command(), capture_output=True, text=True,
                              timeout=self.timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise TestVMError("QEMU failed to start (exit %d): %s"
                              % (proc.returncode, proc.stderr.strip()))
        with open(self.pidfile) as f:
            self.pid = int(f.read().strip())
        deadline = time.monotonic() + self.timeout
        while not qmp.is_running(self.qmp_socket):
            if not _pid_alive(self.pid) or time.monotonic() > deadline:
                self.kill()
                raise TestVMError("QEMU did not answer on %s"
                                  % self.qmp_socket)
            time.sleep(0.05)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.kill()

    def alive(self):
        return self.pid is not None and _pid_alive(self.pid)

    def _wait_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while _pid_alive(self.pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def _cleanup(self):
        for path in self._files():
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.pid = None

    def kill(self):
        """SIGKILL QEMU, wait until it is gone, remove socket and pidfile.
        Safe to call at any time, repeatedly.
        """
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._wait_gone(self.timeout)
        self._cleanup()

    def shutdown(self):
        """Quit QEMU cleanly (it flushes every image), kill if it hangs."""
        if self.pid is None:
            return
        try:
            with self.session() as s:
                s.execute("quit")
        except Exception:  # noqa - falls back to kill below
            pass
        if not self._wait_gone(self.timeout):
            self.kill()
            return
        self._cleanup()

    # -- QMP ----------------------------------------------------------------
    def session(self):
        return qmp.QMPSession(self.qmp_socket, timeout=self.timeout)

    def qmp(self, cmd, args=None):
        with self.session() as s:
            return s.execute(cmd, args)

    def hmp(self, command_line):
        with self.session() as s:
            return s.hmp(command_line)

    def status(self):
        return self.qmp("query-status")["status"]

    def stop_vm(self):
        self.qmp("stop")

    def cont(self):
        self.qmp("cont")

    def nodes(self):
        """qcow2 nodes: list of dicts with node-name, file, backing_file."""
        nodes = [n for n in self.qmp("query-named-block-nodes",
                                     {"flat": True})
                 if n.get("drv") == "qcow2"]
        for n in nodes:
            # A node whose backing is not what its header names (a relative
            # name, a layer added with "backing": null) is named by its
            # options, json:{...}; the file is inside.
            if n.get("file", "").startswith("json:"):
                try:
                    n["file"] = json.loads(n["file"][5:])["file"][
                        "filename"]
                except (ValueError, KeyError, TypeError):
                    pass
            # A relative backing name is relative to the image's directory.
            backing = n.get("backing_file")
            if backing and backing.startswith("json:"):
                try:
                    backing = json.loads(backing[5:])["file"]["filename"]
                except (ValueError, KeyError, TypeError):
                    pass
                n["backing_file"] = backing
            if backing and not os.path.isabs(backing):
                n["backing_file"] = os.path.join(
                    os.path.dirname(n["file"]), backing)
        return nodes

    def top_node(self):
        """Node name of the top of the disk's chain.

        The top is a qcow2 node that is no other node's backing; if a stray
        unattached node also qualifies, the one with the longest chain wins.
        """
        nodes = self.nodes()
        by_file = {os.path.realpath(n["file"]): n for n in nodes}
        backings = {os.path.realpath(n["backing_file"])
                    for n in nodes if n.get("backing_file")}
        tops = [n for n in nodes
                if os.path.realpath(n["file"]) not in backings]
        if not tops:
            raise TestVMError("No top node found")

        def depth(node):
            d = 0
            while node and node.get("backing_file") and d < 1000:
                node = by_file.get(os.path.realpath(node["backing_file"]))
                d += 1
            return d
        return max(tops, key=depth)["node-name"]

    def top_image(self):
        node = self.top_node()
        return [n["file"] for n in self.nodes() if n["node-name"] == node][0]

    def write(self, pattern, offset, length, node=None):
        """Write ``length`` bytes of byte ``pattern`` at ``offset`` through
        QEMU's block layer into the top node (or ``node``).
        """
        node = node or self.top_node()
        size = [n for n in self.nodes() if n["node-name"] == node]
        if size and offset + length > size[0]["image"]["virtual-size"]:
            raise TestVMError("write beyond the end of the disk")
        # qemu-io errors go to QEMU's stderr, not back over QMP.
        out = self.hmp('qemu-io %s "write -P 0x%02x %d %d"'
                       % (node, pattern, offset, length))
        if out and ("error" in out.lower() or "fail" in out.lower()):
            raise TestVMError("qemu-io write failed: %s" % out.strip())

    def flush(self, node=None):
        """Flush the top node (or ``node``) so outside readers see the data."""
        node = node or self.top_node()
        out = self.hmp('qemu-io %s "flush"' % node)
        if out and "error" in out.lower():
            raise TestVMError("qemu-io flush failed: %s" % out.strip())


def read_pattern_ok(image, pattern, offset, length):
    """True if ``image`` reads ``length`` bytes of ``pattern`` at ``offset``.

    Reads with ``qemu-io -r -U`` (shared, read-only), so it works while a
    QEMU holds the image; flush that QEMU first.
    """
    cmd = [QEMU_IO, "-r", "-U", "-f", "qcow2", "-c",
           "read -P 0x%02x %d %d" % (pattern, offset, length), image]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Pattern verification failed" in out:
        return False
    return re.search(r"read %d/%d bytes" % (length, length), out) is not None
