"""A synchronous QMP client for the agent's worker threads.

``qemu.qmp`` is asyncio only.  The agent runs its RPC endpoints in plain
threads (oslo.messaging's threading executor), so each :class:`QMPSession`
owns a private event loop for its whole life and drives the async client
with ``run_until_complete``.  No global or thread-default loop is touched,
so sessions in different threads never interfere.

QEMU's QMP socket serves one client at a time: a second connection waits
until the first one closes.  Keep sessions short and never open two at once
on the same socket from one flow.
"""

import asyncio
import logging
import time

from qemu.qmp import QMPClient
from qemu.qmp import ExecuteError
from qemu.qmp import QMPError as _LibQMPError

from agent import exception

LOG = logging.getLogger(__name__)


class QMPSession(object):
    """A connected QMP session, usable as a context manager.

    :param socket_path: path of QEMU's QMP unix socket.
    :param timeout: seconds for connecting and for each command.
    """

    def __init__(self, socket_path, timeout=5.0):
        self.socket_path = socket_path
        self.timeout = timeout
        self._loop = None
        self._client = None
        #: set once a command timed out or the connection broke; the session
        #: must not be used further (a late reply could be mismatched).
        self.broken = False

    # -- life cycle ---------------------------------------------------------
    def open(self):
        """Connect and negotiate.

        :raises QMPError: if QEMU does not answer.
        """
        if self._client is not None:
            return self
        self._loop = asyncio.new_event_loop()
        try:
            self._client = self._run(self._make_client(), self.timeout)
            self._run(self._client.connect(self.socket_path), self.timeout)
        except (_LibQMPError, OSError, EOFError, asyncio.TimeoutError) as exc:
            self.close()
            raise exception.QMPError(
                "Cannot connect to QMP socket %s: %s"
                % (self.socket_path, exc or exc.__class__.__name__))
        except BaseException:
            self.close()
            raise
        return self

    async def _make_client(self):
        # Created inside the loop so its asyncio primitives bind to it.
        return QMPClient("livesnap")

    def close(self):
        """Disconnect and close the private event loop; safe to repeat."""
        loop, client = self._loop, self._client
        self._loop = self._client = None
        if loop is None:
            return
        try:
            if client is not None:
                try:
                    loop.run_until_complete(
                        asyncio.wait_for(client.disconnect(), self.timeout))
                except BaseException as exc:  # noqa - best effort teardown
                    LOG.debug("QMP disconnect from %(sock)s: %(exc)s",
                              {"sock": self.socket_path, "exc": exc})
        finally:
            loop.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        self.close()

    def _run(self, coro, timeout):
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    # -- commands -----------------------------------------------------------
    def execute(self, cmd, args=None, timeout=None):
        """Run QMP command ``cmd`` with ``args``; return its result.

        :raises QMPError: the command failed, timed out, or the connection
            is gone.  ``exc.kwargs['error_class']`` holds QEMU's error class
            when QEMU answered with an error.
        """
        if self._client is None:
            raise exception.QMPError("QMP session to %s is not open"
                                     % self.socket_path)
        if self.broken:
            raise exception.QMPError("QMP session to %s is broken"
                                     % self.socket_path)
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        try:
            result = self._run(self._client.execute(cmd, args), timeout)
        except ExecuteError as exc:
            raise exception.QMPError(
                "QMP %s failed: %s" % (cmd, exc),
                command=cmd, error_class=exc.error_class)
        except asyncio.TimeoutError:
            self.broken = True
            raise exception.QMPError(
                "QMP %s timed out after %.3f s" % (cmd, timeout),
                command=cmd, timeout=True)
        except (_LibQMPError, OSError, EOFError) as exc:
            self.broken = True
            raise exception.QMPError(
                "QMP %s on %s failed: %s" % (cmd, self.socket_path,
                                             exc or exc.__class__.__name__),
                command=cmd)
        LOG.debug("QMP %(cmd)s took %(ms).3f ms",
                  {"cmd": cmd, "ms": (time.monotonic() - start) * 1000.0})
        return result

    def hmp(self, command_line, timeout=None):
        """Run an HMP command line through ``human-monitor-command``."""
        return self.execute("human-monitor-command",
                            {"command-line": command_line}, timeout=timeout)

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
