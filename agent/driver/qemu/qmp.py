"""A synchronous QMP client for the agent's worker threads.

Why not ``qemu.qmp``: it is asyncio only, so each session needed an event
loop of its own, and it writes every command with a write of its own from
its writer task.  The paused section of an operation must reach QEMU in one
piece (``stop``, the graph change and ``cont`` in a single write), so that
the resume is already queued inside QEMU before the pause begins and never
waits for this process to be scheduled again: in a busy multi-threaded
agent every awaited round trip inside a pause also waits for the GIL (5 ms
switch interval), and the pause grew with the agent's load (see
docs/qemu.md, "The pause").  QMP itself is line-delimited JSON over a unix
socket; this module speaks it with a blocking socket and no threads.

QEMU's QMP socket serves one client at a time: a second connection waits
until the first one closes.  Keep sessions short and never open two at once
on the same socket from one flow.
"""

import collections
import json
import logging
import socket
import time

from agent import exception

LOG = logging.getLogger(__name__)

#: events kept per session (the pause window needs only the last few)
_MAX_EVENTS = 256


def event_time(event):
    """The UNIX time QEMU stamped on ``event`` (its own clock), or None."""
    stamp = event.get("timestamp") if isinstance(event, dict) else None
    if not isinstance(stamp, dict):
        return None
    try:
        return stamp["seconds"] + stamp["microseconds"] / 1e6
    except (KeyError, TypeError):
        return None


class QMPSession(object):
    """A connected QMP session, usable as a context manager.

    Events that arrive while commands run are kept in :attr:`events` (the
    newest :data:`_MAX_EVENTS`), so a caller can read QEMU's own timestamps
    of ``STOP`` and ``RESUME`` after a paused section.

    :param socket_path: path of QEMU's QMP unix socket.
    :param timeout: seconds for connecting and for each command.
    """

    def __init__(self, socket_path, timeout=5.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock = None
        self._buf = b""
        self._next_id = 0
        self._commands = {}   # id -> command name, until its reply is read
        self._replies = {}    # replies read ahead of the one awaited
        self.events = collections.deque(maxlen=_MAX_EVENTS)
        #: set once a command timed out or the connection broke; the session
        #: must not be used further (a late reply could be mismatched).
        self.broken = False

    # -- life cycle ---------------------------------------------------------
    def open(self):
        """Connect and negotiate.

        :raises QMPError: if QEMU does not answer.
        """
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = sock
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
            deadline = time.monotonic() + self.timeout
            greeting = self._read_message(deadline)
            if "QMP" not in greeting:
                raise exception.QMPError("no QMP greeting: %r" % (greeting,))
            self.execute("qmp_capabilities")
        except (OSError, ValueError, exception.QMPError) as exc:
            self.close()
            raise exception.QMPError(
                "Cannot connect to QMP socket %s: %s"
                % (self.socket_path, exc or exc.__class__.__name__))
        self.broken = False
        return self

    def close(self):
        """Disconnect; safe to repeat."""
        sock, self._sock = self._sock, None
        self._buf = b""
        self._commands.clear()
        self._replies.clear()
        if sock is not None:
            try:
                sock.close()
            except OSError as exc:  # noqa - best effort teardown
                LOG.debug("QMP close of %(sock)s: %(exc)s",
                          {"sock": self.socket_path, "exc": exc})

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        self.close()

    # -- the wire -------------------------------------------------------------
    def _read_message(self, deadline):
        """Read one JSON message; events are not filtered here."""
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out")
            self._sock.settimeout(remaining)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("QEMU closed the monitor connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        line = line.strip()
        if not line:
            return self._read_message(deadline)
        return json.loads(line)

    def send(self, commands):
        """Write ``commands`` (a list of ``(cmd, args)``) in one write and
        return their ids, without reading any reply.

        QEMU runs them back to back in order whatever this process does
        next; a failed command does not stop the ones after it.  Read the
        replies with :meth:`reply`.

        :raises QMPError: the connection is gone (the session is broken).
        """
        self._check_usable()
        ids, payload = [], []
        for cmd, args in commands:
            self._next_id += 1
            msg_id = "ls-%d" % self._next_id
            msg = {"execute": cmd, "id": msg_id}
            if args:
                msg["arguments"] = args
            ids.append(msg_id)
            self._commands[msg_id] = cmd
            payload.append(json.dumps(msg).encode())
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(b"\n".join(payload) + b"\n")
        except OSError as exc:
            self.broken = True
            raise exception.QMPError(
                "QMP write to %s failed: %s" % (self.socket_path, exc),
                command=",".join(cmd for cmd, _ in commands))
        return ids

    def reply(self, msg_id, timeout=None):
        """Wait for the reply to command ``msg_id`` (from :meth:`send`).

        :returns: ``(result, error)``, ``error`` being QEMU's error object
            (``class``, ``desc``) or None.
        :raises QMPError: the connection broke (the session is then
            broken) or the reply did not arrive in ``timeout`` seconds
            (``timeout=True``; it may still be read later).
        """
        cmd = self._commands.get(msg_id, msg_id)
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            while msg_id not in self._replies:
                self._check_usable()
                msg = self._read_message(deadline)
                if "event" in msg:
                    self.events.append(msg)
                elif msg.get("id") in self._commands:
                    # (a reply to an earlier command whose wait timed out
                    # is kept until it is asked for or the session ends)
                    self._replies[msg["id"]] = msg
                else:
                    LOG.debug("Unmatched QMP message on %(sock)s: %(msg)s",
                              {"sock": self.socket_path, "msg": msg})
        except socket.timeout:
            # Replies carry ids: a late one is matched when it comes, so
            # the session stays usable (QEMU drops the commands it has not
            # read yet when the client closes, a queued cont included).
            raise exception.QMPError(
                "QMP %s timed out after %.3f s" % (cmd, timeout),
                command=cmd, timeout=True)
        except (OSError, EOFError, ValueError) as exc:
            self.broken = True
            raise exception.QMPError(
                "QMP %s on %s failed: %s" % (cmd, self.socket_path,
                                             exc or exc.__class__.__name__),
                command=cmd)
        msg = self._replies.pop(msg_id)
        del self._commands[msg_id]
        return msg.get("return"), msg.get("error")

    def execute(self, cmd, args=None, timeout=None):
        """Run QMP command ``cmd`` with ``args``; return its result.

        :raises QMPError: the command failed, timed out, or the connection
            is gone.  ``exc.kwargs['error_class']`` holds QEMU's error class
            when QEMU answered with an error.
        """
        start = time.monotonic()
        msg_id, = self.send([(cmd, args)])
        result, error = self.reply(msg_id, timeout)
        LOG.debug("QMP %(cmd)s took %(ms).3f ms",
                  {"cmd": cmd, "ms": (time.monotonic() - start) * 1000.0})
        if error is not None:
            raise command_error(cmd, error)
        return result

    def _check_usable(self):
        if self._sock is None:
            raise exception.QMPError("QMP session to %s is not open"
                                     % self.socket_path)
        if self.broken:
            raise exception.QMPError("QMP session to %s is broken"
                                     % self.socket_path)

    def hmp(self, command_line, timeout=None):
        """Run an HMP command line through ``human-monitor-command``."""
        return self.execute("human-monitor-command",
                            {"command-line": command_line}, timeout=timeout)

    def last_event(self, name, since=None):
        """The newest event ``name`` kept, stamped at or after ``since``
        (UNIX time on QEMU's clock), or None.
        """
        for event in reversed(self.events):
            if event.get("event") != name:
                continue
            if since is None or (event_time(event) or 0) >= since:
                return event
        return None

    # -- helpers used by the driver and tests ---------------------------------
    def status(self):
        """Return the run state ('running', 'paused', ...)."""
        return self.execute("query-status")["status"]

    def named_nodes(self):
        """``query-named-block-nodes`` (flat)."""
        return self.execute("query-named-block-nodes", {"flat": True})

    def jobs(self):
        return self.execute("query-jobs")

    def job(self, job_id):
        """Return the ``query-jobs`` entry of ``job_id`` or None."""
        for job in self.jobs():
            if job.get("id") == job_id:
                return job
        return None


def command_error(cmd, error):
    """A :class:`QMPError` for QEMU's ``error`` reply to ``cmd``."""
    return exception.QMPError(
        "QMP %s failed: %s" % (cmd, error.get("desc", error)),
        command=cmd, error_class=error.get("class"))


def is_running(socket_path, timeout=2.0):
    """True if a QEMU answers QMP on ``socket_path``."""
    if not socket_path:
        return False
    try:
        with QMPSession(socket_path, timeout=timeout) as session:
            session.execute("query-status")
        return True
    except exception.QMPError:
        return False
