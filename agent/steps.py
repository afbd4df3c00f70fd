"""Record the steps of one operation with their timings.

Every operation the agent performs is a short list of the patent's steps
(pause, prepare images, pivot or merge, delete, resume).  The recorder keeps
each step's name, start time, duration and outcome, so the conductor can store
them and the API can show them.  ``pause_ms`` is the time the backend was
paused: QEMU's own STOP to RESUME window when the driver has it (event
timestamps, whatever the agent's process was doing meanwhile), else the
agent's.  ``agent_pause_ms`` is always the agent's own view, from the moment
it sent the pause to the moment it saw the resume answered.  ``taken_at``
is when the first pause began (UNIX time): QEMU's STOP timestamp when the
driver has it, else the agent's clock; a snapshot records it as the moment
it was taken.
"""

import contextlib
import time


class StepRecorder(object):
    """Collects each step's ``{"name", "started_at", "duration_ms",
    "status", "detail"}``.
    """

    def __init__(self, listener=None):
        """:param listener: called as ``listener(event, name, detail)`` with
            event ``start``/``end`` around each step and ``paused``/
            ``resumed``; the agent journals from it (write-ahead).
        """
        self.steps = []
        self._paused_at = None
        self.pause_ms = None
        self.agent_pause_ms = None
        self.taken_at = None
        self._wall_paused_at = None
        self._listener = listener

    def _notify(self, event, name, detail=None):
        if self._listener is not None:
            self._listener(event, name, detail or {})

    @contextlib.contextmanager
    def step(self, name, **detail):
        """Time the block as step ``name``; a raised error marks it failed."""
        entry = {"name": name, "started_at": time.time(),
                 "duration_ms": None, "status": "running"}
        if detail:
            entry["detail"] = dict(detail)
        self._notify("start", name, detail)
        self.steps.append(entry)
        start = time.monotonic()
        try:
            yield entry
        except BaseException as exc:
            entry["status"] = "failed"
            entry["error"] = str(exc) or exc.__class__.__name__
            raise
        else:
            entry["status"] = "done"
        finally:
            entry["duration_ms"] = round(
                (time.monotonic() - start) * 1000.0, 3)
        self._notify("end", name, detail)

    def mark_paused(self):
        """Call right after the backend's I/O was paused."""
        self._paused_at = time.monotonic()
        self._wall_paused_at = time.time()
        self._notify("paused", "pause")

    def mark_resumed(self, qemu_pause_ms=None, resumed_at=None,
                     qemu_paused_at=None):
        """Call right after the backend's I/O was resumed; adds to
        ``pause_ms`` (``qemu_pause_ms`` when the backend measured the
        window itself) and to ``agent_pause_ms``.  ``resumed_at`` is the
        ``time.monotonic()`` at which another thread saw the resume
        answered (a watchdog), when it was not just now.
        ``qemu_paused_at``: the UNIX time QEMU stamped on the pause's
        STOP, which the first pause makes ``taken_at``.
        """
        if self._paused_at is not None:
            if self.taken_at is None:
                self.taken_at = (self._wall_paused_at if qemu_paused_at
                                 is None else qemu_paused_at)
            end = time.monotonic() if resumed_at is None else resumed_at
            elapsed = (end - self._paused_at) * 1000.0
            paused = elapsed if qemu_pause_ms is None else qemu_pause_ms
            self.pause_ms = round((self.pause_ms or 0.0) + paused, 3)
            self.agent_pause_ms = round(
                (self.agent_pause_ms or 0.0) + elapsed, 3)
            if self.steps:
                # Both figures of this pause, on the step that ended it.
                detail = self.steps[-1].setdefault("detail", {})
                detail["agent_pause_ms"] = round(elapsed, 3)
                if qemu_pause_ms is not None:
                    detail["qemu_pause_ms"] = round(qemu_pause_ms, 3)
            self._paused_at = None
            self._notify("resumed", "resume")

    @property
    def paused(self):
        return self._paused_at is not None

    def as_dict(self):
        return {"steps": self.steps, "pause_ms": self.pause_ms,
                "agent_pause_ms": self.agent_pause_ms}
