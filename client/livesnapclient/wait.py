"""``--wait``: poll an operation until it ends, with progress on stderr.

Commands that start an operation (snapshot create, delete, revert,
operation cancel) mix in :class:`WaitMixin` and call
:meth:`WaitMixin.finish`. Their exit status is 0 when the operation
succeeded (or was not waited for), 1 when it failed, 2 when ``--wait``
timed out.
"""

import time

from livesnapclient import exceptions

DEFAULT_WAIT_TIMEOUT = 600.0
#: Seconds between two polls of an operation while waiting for it.
POLL_INTERVAL = 0.5

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_TIMEOUT = 2

FINAL_STATUSES = ("succeeded", "failed")


def wait_for_operation(client, operation, timeout, note):
    """Poll an operation until it succeeds or fails.

    Each change of status or progress (of long merges) is passed to
    ``note``, e.g. ``Operation OP: running (25.0%)``.

    :param client: a :class:`livesnapclient.client.Client`.
    :param operation: the operation object returned by the action.
    :param timeout: seconds to wait at most.
    :param note: callable taking one line of text for stderr.
    :returns: the final operation.
    :raises WaitTimeout: when it has not ended after ``timeout`` seconds.
    :raises ClientError: when a poll fails.
    """
    deadline = time.monotonic() + timeout
    last = None
    op = operation
    while True:
        progress = op.get("progress")
        state = (op.get("status"), progress)
        if state != last:
            msg = "Operation %s: %s" % (op.get("id"), op.get("status"))
            if isinstance(progress, (int, float)) and \
                    not isinstance(progress, bool):
                msg += " (%.1f%%)" % progress
            note(msg)
            last = state
        if op.get("status") in FINAL_STATUSES:
            return op
        if time.monotonic() >= deadline:
            raise exceptions.WaitTimeout(
                "Error: timed out after %s s waiting for operation %s"
                % (timeout, operation.get("id")))
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        op = client.get_operation(op["id"])


class WaitMixin:
    """``--wait``/``--timeout`` and the exit status of a cliff command that
    starts an operation. Put it before the cliff base class.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument(
            "--wait", action="store_true",
            help="wait for the operation to finish; progress goes to "
                 "stderr (exit 1 if it failed, 2 on timeout)")
        parser.add_argument(
            "--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT,
            metavar="SECONDS",
            help="seconds --wait waits at most (default %d)"
                 % DEFAULT_WAIT_TIMEOUT)
        return parser

    def finish(self, client, parsed_args, operation):
        """Wait for ``operation`` when ``--wait`` was given.

        A failed operation is reported on stderr and makes the command exit
        1, after its result is shown.

        :returns: the final operation (or ``operation`` without ``--wait``).
        :raises WaitTimeout: when the wait timed out.
        """
        if not parsed_args.wait:
            return operation

        def note(text):
            self.app.stderr.write(text + "\n")
            self.app.stderr.flush()

        final = wait_for_operation(client, operation, parsed_args.timeout,
                                   note)
        if final.get("status") == "failed":
            note("Error: operation %s failed: %s"
                 % (final.get("id"), final.get("error") or "unknown error"))
            self._exit_status = EXIT_FAILURE
        return final

    def run(self, parsed_args):
        self._exit_status = EXIT_OK
        try:
            status = super().run(parsed_args)
        except exceptions.WaitTimeout as exc:
            self.app.stderr.write("%s\n" % exc)
            return EXIT_TIMEOUT
        return status or self._exit_status
