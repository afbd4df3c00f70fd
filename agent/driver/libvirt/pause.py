"""The pause of a libvirt domain: QEMU's clock for it and its watchdog.

``PauseClock`` measures a pause on QEMU's own clock (the STOP and RESUME
events libvirt passes on); ``PauseWatchdog`` resumes a domain the agent
suspended once the pause outlives ``[agent] pause_deadline``, whatever the
thread that suspended it is doing.
"""

import logging
import threading
import time

from agent import exception

try:
    import libvirt
    import libvirt_qemu
except ImportError:  # pragma: no cover - the driver then refuses to start
    libvirt = libvirt_qemu = None

LOG = logging.getLogger(__name__)

_REGEX_FLAG = getattr(
    libvirt_qemu, 'VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX', 0)


class PauseClock(object):
    """QEMU's own STOP and RESUME timestamps, as libvirt passes QEMU's
    monitor events on (``virConnectDomainQemuMonitorEventRegister``; only
    listening, so the domain is not marked tainted).  The events arrive on
    libvirt's event loop, which runs in a daemon thread started before the
    first connection is opened.
    """

    _loop_started = False
    _loop_lock = threading.Lock()

    def __init__(self):
        self._cond = threading.Condition()
        self._events = {}
        #: True once QEMU's events reach us
        self.active = False

    @classmethod
    def start_loop(cls):
        """Start libvirt's default event loop once per process; returns
        False if it cannot run.
        """
        with cls._loop_lock:
            if cls._loop_started:
                return True
            try:
                libvirt.virEventRegisterDefaultImpl()
            except (libvirt.libvirtError, AttributeError) as exc:
                LOG.warning('No libvirt event loop (%(exc)s): pauses are '
                            'measured by the agent', {'exc': exc})
                return False

            def run():
                while True:
                    libvirt.virEventRunDefaultImpl()

            threading.Thread(target=run, name='libvirt-events',
                             daemon=True).start()
            cls._loop_started = True
            return True

    def register(self, conn):
        """Listen to STOP and RESUME of every domain on ``conn``."""
        if libvirt_qemu is None or not self._loop_started:
            return
        try:
            libvirt_qemu.qemuMonitorEventRegister(
                conn, None, '^(STOP|RESUME)$', self._event, None,
                _REGEX_FLAG)
            self.active = True
        except libvirt.libvirtError as exc:
            LOG.warning('Cannot listen to QEMU\'s events (%(exc)s): pauses '
                        'are measured by the agent', {'exc': exc})

    def _event(self, conn, dom, event, seconds, micros, details, opaque):
        with self._cond:
            events = self._events.setdefault(dom.UUIDString(), [])
            events.append((event, seconds + micros / 1e6))
            del events[:-8]
            self._cond.notify_all()

    def mark(self, uuid):
        """Forget ``uuid``'s events: a window starts after this."""
        with self._cond:
            self._events[uuid] = []

    def window_ms(self, uuid, timeout=1.0):
        """QEMU's STOP to RESUME window of ``uuid`` since ``mark``, in
        ms, waiting up to ``timeout`` s for the RESUME event; None if the
        events did not come.
        """
        if not self.active:
            return None
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = self._events.get(uuid, [])
                stops = [t for e, t in events if e == 'STOP']
                resumes = [t for e, t in events if e == 'RESUME']
                if stops and resumes and resumes[-1] >= stops[0]:
                    return (resumes[-1] - stops[0]) * 1000.0
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def stopped_at(self, uuid):
        """QEMU's time of ``uuid``'s first STOP since ``mark`` (UNIX
        time), or None.
        """
        with self._cond:
            stops = [t for e, t in self._events.get(uuid, [])
                     if e == 'STOP']
        return stops[0] if stops else None


class PauseWatchdog(object):
    """Resumes a domain the agent suspended once the pause outlives
    ``[agent] pause_deadline``, whatever the thread that suspended it is
    doing (stuck in a libvirt call, or not scheduled).

    Armed right before ``suspend`` is sent.  From the deadline on, its
    thread tries to resume the domain until it has or :meth:`disarm`
    runs: a domain not yet paused (a ``suspend`` slower than the
    deadline) is looked at again every :attr:`POLL` seconds, and a resume
    that fails (libvirt serializes the jobs of one domain, so a resume
    sent while ``snapshotCreateXML`` holds the domain's job waits for it,
    and fails once libvirt's job wait times out) is tried again over a
    fresh lookup.  :meth:`disarm` runs first in the ``finally`` that
    resumes, and waits for an attempt under way, so the two never race.
    The bound is the deadline, or the end of libvirt's job on the domain
    when that comes later.

    :param resume_once: ``resume_once(guest, uuid, fresh)``, one attempt
        at resuming the domain (looked up again when ``fresh``); True if
        it was paused and is resumed now.
    :param guest: the ``agent.driver.libvirt.guest.Guest`` suspended.
    :param deadline: seconds from :meth:`arm` to the first resume.
    """

    #: seconds between two looks at a domain not yet paused
    POLL = 0.05
    #: seconds between two failed resumes
    RETRY = 0.2

    def __init__(self, resume_once, guest, deadline):
        self._resume_once = resume_once
        self._guest = guest
        self._uuid = guest.uuid
        self.deadline = deadline
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name='pause-watchdog-%s' % self._uuid,
            daemon=True)
        #: ``time.monotonic()`` when the watchdog's resume was answered
        self.resumed_at = None
        #: what the watchdog's last resume failed with, if one did
        self.error = None

    def arm(self):
        """Start counting the deadline."""
        self._thread.start()

    def _watch(self):
        if self._stop.wait(self.deadline):
            return
        fresh = False
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    if self._resume_once(self._guest, self._uuid,
                                         fresh=fresh):
                        self.resumed_at = time.monotonic()
                        self._stop.set()
                        LOG.warning('Domain %(dom)s stayed suspended past '
                                    'the pause deadline (%(ms).1f ms): '
                                    'resumed it',
                                    {'dom': self._uuid,
                                     'ms': self.deadline * 1000.0})
                        return
                    wait = self.POLL
                except exception.AgentError as exc:
                    self.error = str(exc)
                    fresh = True
                    wait = self.RETRY
                    LOG.error('The pause watchdog could not resume domain '
                              '%(dom)s (trying again): %(exc)s',
                              {'dom': self._uuid, 'exc': exc})
            if self._stop.wait(wait):
                return

    def disarm(self):
        """Stop the watchdog (waiting for a resume it has begun).

        :returns: True if it resumed the domain.
        """
        self._stop.set()
        with self._lock:
            pass
        return self.resumed_at is not None
