"""A small synchronous client of the QEMU guest agent (qemu-ga).

The guest agent speaks JSON lines over the host end of a ``virtio-serial``
port named ``org.qemu.guest_agent.0`` (a QEMU chardev, here a unix
socket).  Unlike QMP it has no greeting and no capabilities negotiation,
and the channel may hold stale replies of an earlier client: a session
starts with ``guest-sync`` (a random id the agent echoes), and every line
before that echo is dropped.  Used by the QEMU driver to freeze the guest's
filesystems around a snapshot's pause (see docs/qemu.md, "Quiesce").
"""

import json
import logging
import random
import socket
import time

from agent import exception

LOG = logging.getLogger(__name__)

#: longest line read from the guest (the guest is not trusted)
_MAX_LINE = 1024 * 1024


class QGAError(exception.AgentError):
    """The guest agent did not answer in time, or answered an error."""
    code = "guest_agent_error"


class QGATimeout(QGAError):
    """The guest agent did not answer within the deadline."""
    code = "guest_agent_timeout"


class QGASession(object):
    """A connected guest agent session, usable as a context manager.

    :param socket_path: the unix socket of the guest agent's chardev.
    :param timeout: default seconds for connecting and for each command.
    """

    def __init__(self, socket_path, timeout=5.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock = None
        self._buf = b""

    def open(self):
        """Connect and synchronise (``guest-sync``).

        :raises QGAError: no connection, or no answer in time.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = sock
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError as exc:
            self.close()
            raise QGAError("Cannot connect to the guest agent at %s: %s"
                           % (self.socket_path, exc))
        try:
            self.sync()
        except Exception:
            self.close()
            raise
        return self

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _send(self, command, arguments=None):
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QGAError("Guest agent at %s: cannot send %s: %s"
                           % (self.socket_path, command, exc))

    def _read_line(self, deadline, command):
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QGATimeout("The guest agent at %s did not answer %s "
                                 "in time" % (self.socket_path, command))
            self._sock.settimeout(left)
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                raise QGAError("Guest agent at %s: %s"
                               % (self.socket_path, exc))
            if not data:
                raise QGAError("The guest agent at %s closed the channel"
                               % (self.socket_path,))
            self._buf += data
            if len(self._buf) > _MAX_LINE:
                raise QGAError("The guest agent at %s sent an overlong line"
                               % (self.socket_path,))
        line, self._buf = self._buf.split(b"\n", 1)
        # qemu-ga may send a 0xff sentinel byte (guest-sync-delimited).
        return line.strip(b"\xff \r\t")

    def _reply(self, command, deadline):
        """The next JSON object the agent sends (blank lines skipped)."""
        while True:
            line = self._read_line(deadline, command)
            if not line:
                continue
            try:
                reply = json.loads(line)
            except ValueError:
                LOG.debug("Dropping a line that is not JSON from the guest "
                          "agent at %(sock)s", {"sock": self.socket_path})
                continue
            if isinstance(reply, dict):
                return reply

    def sync(self, timeout=None):
        """``guest-sync``: drop stale replies until the agent echoes a
        fresh random id.  :raises QGAError, QGATimeout:
        """
        token = random.randint(1, 2 ** 31 - 1)
        deadline = time.monotonic() + (timeout or self.timeout)
        self._send("guest-sync", {"id": token})
        while True:
            reply = self._reply("guest-sync", deadline)
            if reply.get("return") == token:
                return

    def execute(self, command, arguments=None, timeout=None):
        """Run ``command`` and give its ``return`` value.

        :raises QGAError: the agent answered an error.
        :raises QGATimeout: no answer within ``timeout`` seconds (the
            session must not be used further).
        """
        deadline = time.monotonic() + (timeout or self.timeout)
        self._send(command, arguments)
        reply = self._reply(command, deadline)
        if "error" in reply:
            error = reply["error"] or {}
            raise QGAError("Guest agent at %s: %s failed: %s"
                           % (self.socket_path, command,
                              error.get("desc", error)))
        return reply.get("return")

    # -- filesystem freeze ------------------------------------------------
    def freeze(self, timeout=None):
        """``guest-fsfreeze-freeze``: :returns: filesystems frozen."""
        return self.execute("guest-fsfreeze-freeze", timeout=timeout)

    def thaw(self, timeout=None):
        """``guest-fsfreeze-thaw``: :returns: filesystems thawed."""
        return self.execute("guest-fsfreeze-thaw", timeout=timeout)

    def status(self, timeout=None):
        """``guest-fsfreeze-status``: ``"thawed"`` or ``"frozen"``."""
        return self.execute("guest-fsfreeze-status", timeout=timeout)


def thaw(socket_path, timeout=5.0):
    """Thaw the guest's filesystems if they are frozen, on a new session.

    :returns: True if they were frozen and are thawed now.
    :raises QGAError, QGATimeout:
    """
    with QGASession(socket_path, timeout) as session:
        if session.status() != "frozen":
            return False
        session.thaw()
        return True
