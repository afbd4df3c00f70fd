"""The libvirt backend: the patent's steps on domains libvirt runs.

libvirt owns the QEMU process and its monitor; this driver never opens a
monitor socket of its own.  It drives the domain through the libvirt API
(``[libvirt] uri``):

* create, online: the new layer is made first with ``qemu-img`` (outside
  any pause), then ``snapshotCreateXML`` disk-only for that one target,
  reusing the file and keeping no libvirt metadata.  How the disk pauses
  is ``[libvirt] snapshot_pause``: ``transaction`` (the one call; libvirt
  runs it as a QEMU ``transaction``, which drains the disk's I/O while the
  vCPUs go on) or ``suspend`` (``suspend``, the call, ``resume`` in a
  ``finally`` with retries).  See docs/libvirt.md.
* quiesce: ``fsFreeze`` (the domain's guest agent channel) before the
  pause and ``fsThaw`` after it in a ``finally`` (:meth:`_quiesced`).
* merge, online: ``blockPull`` (with the parent as ``base``) streams the
  snapshot into the live layer; ``blockCommit`` commits the live layer
  into the snapshot (``VIR_DOMAIN_BLOCK_COMMIT_ACTIVE`` and a pivot with
  ``blockJobAbort``) or an intermediate layer into the snapshot (libvirt
  can only stream into the live layer).  Progress comes from
  ``blockJobInfo``.
* offline (the domain shut off, or layers the running domain does not
  use): ``qemu-img`` (agent.images), and the domain's definition is
  pointed at the new live layer.

Locators::

    disk   {"driver": "libvirt", "domain": UUID, "target": "vda",
            "path": the disk's current source file}
    image  {"driver": "libvirt", "path": file}

Every method is idempotent: the domain's backing chain (its XML) tells what
a previous attempt did; a pivot that happened is kept.
"""

import contextlib
import logging
import math
import os
import re
import stat
import threading
import time
import xml.etree.ElementTree as ET

import tenacity

from agent.driver import base
from agent import exception
from agent import images
from agent import paths

try:
    import libvirt
    import libvirt_qemu
except ImportError:  # pragma: no cover - the driver then refuses to start
    libvirt = libvirt_qemu = None

LOG = logging.getLogger(__name__)

NAME = 'libvirt'

#: room a new, empty layer takes (header, tables) with some margin
_LAYER_BYTES = 1024 * 1024

#: most locators one ``inspect`` looks at
_INSPECT_MAX = 10000

#: what image work appends to a layer's file name while it works on it
#: (as in the QEMU driver: agent.images' trash and temporary files)
_WORK_SUFFIX = re.compile(r'(\.deleted|\.tmp(-[0-9]+)?)$')

PAUSE_MODES = ('transaction', 'suspend')

#: the name of the virtio-serial port qemu-ga listens on
GUEST_AGENT_CHANNEL = 'org.qemu.guest_agent.0'


class LibvirtError(exception.AgentError):
    """libvirt refused a call or could not be reached."""
    code = 'libvirt_error'


def _wrap(what, exc):
    """The AgentError for libvirt's error ``exc`` while doing ``what``."""
    text = '%s: %s' % (what, exc)
    if images.NO_SPACE in str(exc):
        return exception.NoSpace(text)
    return LibvirtError(text)


def _is_file(path):
    """A regular file or a symbolic link (not a socket, fifo or device)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return os.path.realpath(a) == os.path.realpath(b)


def image_locator(path):
    """The image locator of file ``path``."""
    return {'driver': NAME, 'path': path}


def disk_locator(uuid, target, path):
    """The disk locator of ``target`` of domain ``uuid`` running on
    ``path``."""
    return {'driver': NAME, 'domain': uuid, 'target': target, 'path': path}


def _disk_elements(root):
    """The ``<disk>`` elements of a domain XML that have a file source."""
    for disk in root.findall('./devices/disk'):
        target = disk.find('target')
        if target is None or target.get('dev') is None:
            continue
        yield disk


def _source_file(elem):
    source = elem.find('source') if elem is not None else None
    if source is None:
        return None
    return source.get('file')


def _chain(disk):
    """The files of ``disk``'s backing chain as libvirt knows it, live
    layer first."""
    files = []
    elem = disk
    while elem is not None:
        path = _source_file(elem)
        if path is None:
            break
        files.append(path)
        elem = elem.find('backingStore')
    return files


_REGEX_FLAG = getattr(
    libvirt_qemu, 'VIR_CONNECT_DOMAIN_QEMU_MONITOR_EVENT_REGISTER_REGEX', 0)


class _PauseClock(object):
    """QEMU's own STOP and RESUME timestamps, as libvirt passes QEMU's
    monitor events on (``virConnectDomainQemuMonitorEventRegister``; only
    listening, so the domain is not marked tainted).  The events arrive on
    libvirt's event loop, which runs in a daemon thread started before the
    first connection is opened."""

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
        False if it cannot run."""
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
        events did not come."""
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


#: ``VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT``: libvirt's own choice
AGENT_RESPONSE_TIMEOUT_DEFAULT = -1


class _PauseWatchdog(object):
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
    """

    #: seconds between two looks at a domain not yet paused
    POLL = 0.05
    #: seconds between two failed resumes
    RETRY = 0.2

    def __init__(self, driver, dom, deadline):
        self._driver = driver
        self._dom = dom
        self._uuid = dom.UUIDString()
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
                    if self._driver._resume_once(self._dom, self._uuid,
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


def _as_in(chain, path):
    """``path`` spelled as libvirt has it in ``chain`` (libvirt looks
    layers up by the name it was given)."""
    if path is None:
        return None
    for name in chain:
        if _same(name, path):
            return name
    return path


class LibvirtDriver(base.Driver):
    """Snapshot, merge and delete the qcow2 layers of libvirt domains.

    :param image_dirs: directories the agent may touch (see agent.paths).
    Every parameter left None is taken from the configuration.

    :param uri: libvirt connection URI (``[libvirt] uri``).
    :param snapshot_pause: ``transaction`` or ``suspend`` (``[libvirt]
        snapshot_pause``).
    :param resume_retries: attempts at resuming a suspended domain
        (``[agent] resume_retries``).
    :param pause_deadline: seconds a domain the driver suspended may stay
        so before a watchdog resumes it (``[agent] pause_deadline``; see
        _PauseWatchdog).
    :param job_poll_interval: seconds between ``blockJobInfo`` polls.
    :param job_timeout: seconds a merge's block job may run (``[agent]
        merge_timeout``); past it the job is aborted and the merge fails.
    :param reserved_bytes: free space an image directory keeps
        (``[agent] reserved_space_mb``).
    :param merge_speed: bytes per second a block job may copy, 0: no
        limit (``[agent] merge_rate_limit_mb``).
    :param quiesce_timeout: seconds the guest agent has to freeze the
        guest's filesystems (``[agent] quiesce_timeout``; see
        :meth:`_quiesced`).
    """

    name = NAME

    def __init__(self, image_dirs, uri=None, snapshot_pause=None,
                 resume_retries=None, job_poll_interval=None,
                 job_timeout=None, reserved_bytes=None, merge_speed=None,
                 pause_deadline=None, quiesce_timeout=None, **options):
        super().__init__(image_dirs, **options)
        # What is not given comes from the configuration, so the loader
        # may pass only the image directories.
        from livesnap import conf
        lv, agent = conf.CONF.libvirt, conf.CONF.agent

        def given(value, default):
            return default if value is None else value

        uri = given(uri, lv.uri)
        snapshot_pause = given(snapshot_pause, lv.snapshot_pause)
        resume_retries = given(resume_retries, agent.resume_retries)
        pause_deadline = given(pause_deadline, agent.pause_deadline)
        quiesce_timeout = given(quiesce_timeout, agent.quiesce_timeout)
        job_poll_interval = given(job_poll_interval, lv.job_poll_interval)
        job_timeout = given(job_timeout, agent.merge_timeout)
        reserved_bytes = given(reserved_bytes,
                               agent.reserved_space_mb * 1024 * 1024)
        merge_speed = given(merge_speed,
                            agent.merge_rate_limit_mb * 1024 * 1024)
        if snapshot_pause not in PAUSE_MODES:
            raise exception.InvalidRequest(
                'snapshot_pause must be one of %s, not %r'
                % (', '.join(PAUSE_MODES), snapshot_pause))
        self.uri = uri
        self.snapshot_pause = snapshot_pause
        self.resume_retries = max(1, int(resume_retries))
        self.pause_deadline = pause_deadline
        self.quiesce_timeout = quiesce_timeout
        self.job_poll_interval = job_poll_interval
        self.job_timeout = job_timeout
        self.reserved_bytes = reserved_bytes
        self.merge_speed = merge_speed
        self._conn = None
        self._conn_lock = threading.Lock()
        self._clock = _PauseClock()

    # -- the connection and the domain's XML --------------------------------
    def _connection(self):
        """The libvirt connection, opened again if it was lost.

        :raises LibvirtError: libvirt-python is missing or libvirtd does
            not answer.
        """
        if libvirt is None:
            raise LibvirtError('The libvirt driver needs libvirt-python '
                               '(pip install livesnap[libvirt])')
        # Operations run in several threads; one of them reconnects.
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            _PauseClock.start_loop()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise _wrap('Cannot connect to libvirt at %s' % self.uri,
                            exc)
            self._clock.register(self._conn)
            return self._conn

    def _domain(self, disk):
        """The domain of a disk locator.

        :raises InvalidRequest: the locator names no domain, or one
            libvirt does not know (as the QEMU driver refuses a disk its
            QEMU does not have open).
        :raises LibvirtError: libvirt cannot be asked.
        """
        uuid = disk.get('domain') if isinstance(disk, dict) else None
        if not isinstance(uuid, str) or not uuid:
            raise exception.InvalidRequest('%r is not a libvirt disk '
                                           'locator' % (disk,))
        try:
            return self._connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.InvalidRequest(
                    'No libvirt domain %s on this host' % uuid)
            raise _wrap('Cannot look up libvirt domain %s' % uuid, exc)

    def _refuse_if_busy(self, dom, target, path, ours=()):
        """:raises ImageInUse: a block job runs on ``target`` that is not
        one of the job types ``ours`` (a job of an earlier attempt, which
        the caller waits for)."""
        job = self._job(dom, target)
        if job and job.get('type') not in ours:
            raise exception.ImageInUse(
                'Disk %s of domain %s is busy with a block job (type %s) '
                'that is not this operation\'s'
                % (target, dom.name(), job.get('type')), image=path)

    @staticmethod
    def _xml(dom, inactive=False):
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        try:
            return ET.fromstring(dom.XMLDesc(flags))
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot read the definition of %s' % dom.name(), exc)

    @staticmethod
    def _disk(root, target):
        for disk in _disk_elements(root):
            if disk.find('target').get('dev') == target:
                return disk
        raise exception.InvalidRequest('The domain has no disk %s' % target)

    def _live_chain(self, dom, target):
        """``target``'s backing chain in the running domain, live layer
        first."""
        return _chain(self._disk(self._xml(dom), target))

    @staticmethod
    def _active(dom):
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot get the state of %s' % dom.name(), exc)

    def _confine(self, path):
        return paths.confine(path, self.image_dirs)

    def _ensure_space(self, target, needed, what):
        """:raises NoSpace: unless ``target``'s directory keeps
        ``reserved_bytes`` free after writing ``needed`` bytes."""
        free = images.free_bytes(target)
        if free - needed < self.reserved_bytes:
            MiB = 1024.0 * 1024.0
            raise exception.NoSpace(
                'Not enough space for %s in %s: it needs %.1f MiB, %.1f MiB '
                'are free and %.1f MiB are kept in reserve'
                % (what, os.path.dirname(target), needed / MiB, free / MiB,
                   self.reserved_bytes / MiB))

    @staticmethod
    def _refuse_if_open(path):
        """:raises ImageInUse: a process holds ``path`` open."""
        try:
            locked = images.is_locked(path)
        except exception.ImageError:
            locked = False
        if locked:
            raise exception.ImageInUse('%s is locked by a running process'
                                       % path, image=path)
        pids = images.open_by(path)
        if pids:
            raise exception.ImageInUse(
                '%s is open by process(es) %s' % (path, pids), image=path)

    def _set_config_source(self, dom, target, path):
        """Point ``target`` of the domain's persistent definition at
        ``path`` (see _set_config_sources)."""
        self._set_config_sources(dom, {target: path})

    def _set_config_sources(self, dom, paths_by_target):
        """Point each target of the domain's persistent definition at its
        path in ``paths_by_target`` (the backing chain is probed from the
        image at start), in one ``defineXML``.  Does nothing for a
        transient domain or when it already does."""
        try:
            if not dom.isPersistent():
                return
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot read %s' % dom.name(), exc)
        root = self._xml(dom, inactive=True)
        changed = False
        for target, path in sorted(paths_by_target.items()):
            disk = self._disk(root, target)
            source = disk.find('source')
            if source is not None and _same(source.get('file'), path):
                continue
            if source is None:
                source = ET.SubElement(disk, 'source')
            source.set('file', path)
            for backing in disk.findall('backingStore'):
                disk.remove(backing)
            changed = True
        if not changed:
            return
        try:
            self._connection().defineXML(ET.tostring(root, encoding='unicode'))
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot point %s of %s at %s'
                        % (', '.join(sorted(paths_by_target)), dom.name(),
                           ', '.join(paths_by_target[t]
                                     for t in sorted(paths_by_target))), exc)
        LOG.info('Pointed %(targets)s of domain %(dom)s at %(paths)s',
                 {'targets': ', '.join(sorted(paths_by_target)),
                  'dom': dom.name(),
                  'paths': ', '.join(paths_by_target[t]
                                     for t in sorted(paths_by_target))})

    def _config_source(self, dom, target):
        return _source_file(self._disk(self._xml(dom, inactive=True),
                                       target))

    # -- the host -------------------------------------------------------------
    def init_host(self, host):
        """Check that libvirtd answers at ``uri``."""
        conn = self._connection()
        LOG.info('libvirt driver on %(host)s: %(uri)s, libvirt %(ver)s, '
                 'snapshot pause %(mode)s',
                 {'host': host, 'uri': self.uri, 'ver': conn.getLibVersion(),
                  'mode': self.snapshot_pause})

    def host_info(self):
        info = super().host_info()
        info['uri'] = self.uri
        return info

    def list_vms(self):
        """Every domain libvirt knows on this host, with its file disks
        named by target."""
        try:
            doms = self._connection().listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot list the domains', exc)
        vms = []
        for dom in doms:
            try:
                uuid = dom.UUIDString()
                root = self._xml(dom)
                running = self._active(dom)
                name = dom.name()
            except LibvirtError as exc:
                # A domain undefined meanwhile.
                LOG.debug('Skipping a domain: %(exc)s', {'exc': exc})
                continue
            disks = []
            for disk in _disk_elements(root):
                path = _source_file(disk)
                if disk.get('device', 'disk') != 'disk' or path is None:
                    continue
                target = disk.find('target').get('dev')
                disks.append({'name': target,
                              'locator': disk_locator(uuid, target, path)})
            vms.append({'name': name, 'uuid': uuid, 'running': running,
                        'disks': disks})
        return vms

    # -- the disk's state -----------------------------------------------------
    def is_online(self, disk):
        """True if the disk's domain runs (paused included); False for a
        domain libvirt does not know (nothing runs it)."""
        try:
            dom = self._domain(disk)
        except exception.InvalidRequest:
            return False
        return self._active(dom)

    def resume(self, disk):
        """Resume the disk's domain if it is paused.

        :returns: True if it was resumed (False for a domain libvirt no
            longer knows: nothing is paused).
        """
        try:
            dom = self._domain(disk)
        except exception.InvalidRequest as exc:
            LOG.warning('Nothing to resume: %(exc)s', {'exc': exc})
            return False
        try:
            state, _reason = dom.state()
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot get the state of %s' % dom.name(), exc)
        if state != libvirt.VIR_DOMAIN_PAUSED:
            return False
        self._resume(dom)
        LOG.info('Resumed domain %(dom)s', {'dom': dom.name()})
        return True

    def _resume_once(self, dom, uuid, fresh):
        """One attempt; after a failure (``fresh``) the domain is looked
        up again, over a new connection if libvirtd's was lost.

        :returns: True if the domain was paused and is resumed now.
        """
        try:
            if fresh:
                dom = self._connection().lookupByUUIDString(uuid)
            state, _reason = dom.state()
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
                return True
            return False
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot resume domain %s' % uuid, exc)

    def _resume(self, dom):
        """Resume ``dom`` with retries.

        :raises ResumeFailed: after ``resume_retries`` attempts.
        """
        uuid = dom.UUIDString()
        attempts = []

        def attempt():
            attempts.append(1)
            self._resume_once(dom, uuid, fresh=len(attempts) > 1)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.resume_retries),
            wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
            retry=tenacity.retry_if_exception_type(exception.AgentError),
            before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
            reraise=True)
        try:
            retrying(attempt)
        except Exception as exc:
            LOG.error('Could not resume domain %(dom)s after %(n)d attempts: '
                      '%(exc)s', {'dom': uuid, 'n': self.resume_retries,
                                  'exc': exc})
            raise exception.ResumeFailed(
                'Could not resume domain %s: %s' % (uuid, exc))

    # -- create ---------------------------------------------------------------
    def layer_locator(self, disk, layer_name):
        """``LAYER_NAME.qcow2`` beside the disk's current file."""
        if (not isinstance(layer_name, str) or not layer_name
                or '/' in layer_name or layer_name.startswith('.')):
            raise exception.InvalidRequest('Bad layer name %r' % layer_name)
        return image_locator(os.path.join(os.path.dirname(disk['path']),
                                          '%s.qcow2' % layer_name))

    def create_snapshot(self, disk, layer_name, rec, quiesce=None):
        """Freeze the disk's live layer and put a new one on top of it.

        :param quiesce: ``required``, ``preferred`` or ``off`` (None):
            freeze the guest's filesystems around the pause through
            libvirt and the domain's guest agent (:meth:`_quiesced`).  The
            result then says what the snapshot got: ``consistency``
            (``application`` or ``crash``) and ``consistency_reason``.
        :returns: ``{"snapshot", "disk", "size_bytes", "online"}``.
        :raises PathNotAllowed, ImageInUse, ImageError, LibvirtError,
            PauseDeadlineExceeded, ResumeFailed, InvalidRequest, NoSpace,
            QuiesceFailed:
        """
        result = self.create_snapshots([disk], [layer_name], rec,
                                       quiesce=quiesce)
        return result['snapshots'][0]

    def create_snapshots(self, disks, layer_names, rec, quiesce=None):
        """Snapshot several disks of one domain in one pause: each live
        layer becomes a snapshot under its new layer
        ``layer_locator(disks[i], layer_names[i])``.  Online, every
        overlay is made first (outside the pause), then ONE
        ``snapshotCreateXML`` names every disk (disk-only, reusing the
        files, no libvirt metadata): libvirt switches them all in one QEMU
        ``transaction``, all or none.  Offline, the overlays are made, then
        one ``defineXML`` points every disk at its new layer.

        :param quiesce: ``required``, ``preferred`` or ``off`` (None): one
            freeze of the guest after every overlay is ready and right
            before the pause, one thaw after it (:meth:`_quiesced`); every
            disk's result then has the same ``consistency`` and
            ``consistency_reason``.
        :returns: see base.Driver.create_snapshots.
        :raises PathNotAllowed, ImageInUse, ImageError, LibvirtError,
            PauseDeadlineExceeded, ResumeFailed, InvalidRequest, NoSpace,
            QuiesceFailed:
        """
        if not disks or len(disks) != len(layer_names):
            raise exception.InvalidRequest('One layer name per disk')
        if len(set(d.get('domain') for d in disks)) != 1:
            raise exception.InvalidRequest(
                'The disks of a snapshot group must be of one VM')
        group = []
        for disk, layer_name in zip(disks, layer_names):
            active = self._confine(disk['path'])
            new = self._confine(self.layer_locator(disk, layer_name)['path'])
            if _same(active, new):
                raise exception.InvalidRequest(
                    'The new layer must differ from the live one')
            group.append((disk.get('target'), active, new))
        if len(set(t for t, _, _ in group)) != len(group) or \
                len(set(a for _, a, _ in group)) != len(group):
            raise exception.InvalidRequest('A disk is named twice')
        dom = self._domain(disks[0])
        for _, _, new in group:
            if not os.path.exists(new):
                self._ensure_space(new, _LAYER_BYTES, 'a new layer')
        online = self._active(dom)
        outcome = {'consistency': 'crash',
                   'consistency_reason': 'quiesce off'}
        if online:
            self._create_online(dom, group, rec,
                                quiesce=(quiesce or 'off', outcome))
        else:
            outcome['consistency_reason'] = (
                'offline: the server was not running; the disks are as '
                'the guest left them')
            self._create_offline(dom, group, rec)
        consistency = outcome if quiesce is not None else {}
        return {'online': online, 'snapshots': [
            dict({'snapshot': image_locator(disk['path']),
                  'disk': disk_locator(disk['domain'], target, new),
                  'size_bytes': images.actual_size(active),
                  'online': online}, **consistency)
            for disk, (target, active, new) in zip(disks, group)]}

    @staticmethod
    def _switch_detail(group):
        """The ``snapshot`` step's detail for ``group``."""
        if len(group) == 1:
            _, active, new = group[0]
            return {'snapshot': active, 'active': new}
        return {'snapshots': [a for _, a, _ in group],
                'actives': [n for _, _, n in group]}

    @staticmethod
    def _done_or_refuse(group, current, what):
        """Whether every disk of ``group`` already runs on its new layer,
        ``current(target, active, new)`` telling (True, False, or None for
        neither layer: refused).

        :raises InvalidRequest: a disk is on neither layer, or only some
            are switched (libvirt switches a group all or none: that was
            not this operation).
        """
        done = []
        for target, active, new in group:
            state = current(target, active, new)
            if state is None:
                raise exception.InvalidRequest(
                    '%s is not the live layer of %s (%s)'
                    % (active, target, what))
            done.append(state)
        if any(done) and not all(done):
            raise exception.InvalidRequest(
                'Only some disks of the group are switched (%s)' % what)
        return all(done)

    def _create_offline(self, dom, group, rec):
        def current(target, active, new):
            path = self._config_source(dom, target)
            if _same(path, new) and _same(images.backing_file(new), active):
                return True
            return False if _same(path, active) else None

        if self._done_or_refuse(group, current, 'the definition'):
            LOG.info('Snapshot onto %(new)s already done',
                     {'new': [n for _, _, n in group]})
            return
        for _, active, _ in group:
            if images.is_locked(active):
                raise exception.ImageInUse(
                    '%s is held open by a running process' % active,
                    image=active)
        for _, active, new in group:
            with rec.step('prepare', image=new):
                images.create_overlay(new, active, exist_ok=True)
        with rec.step('snapshot', **self._switch_detail(group)):
            self._set_config_sources(dom, {t: n for t, _, n in group})
        LOG.info('Created offline snapshot of %(n)d disk(s), new live '
                 'layers %(new)s', {'n': len(group),
                                    'new': [n for _, _, n in group]})

    def _snapshot_xml(self, dom, news):
        """A disk-only snapshot of each target of ``news`` onto its
        existing file (``{target: path}``); every other disk is left
        out."""
        root = ET.Element('domainsnapshot')
        disks = ET.SubElement(root, 'disks')
        for elem in _disk_elements(self._xml(dom)):
            dev = elem.find('target').get('dev')
            if dev in news:
                d = ET.SubElement(disks, 'disk', name=dev,
                                  snapshot='external', type='file')
                ET.SubElement(d, 'driver', type='qcow2')
                ET.SubElement(d, 'source', file=news[dev])
            else:
                ET.SubElement(disks, 'disk', name=dev, snapshot='no')
        return ET.tostring(root, encoding='unicode')

    def _switched(self, dom, group):
        """For each disk of ``group``: True if its new layer is live."""
        switched = []
        for target, _, new in group:
            chain = self._live_chain(dom, target)
            switched.append(bool(chain) and _same(chain[0], new))
        return switched

    def _create_online(self, dom, group, rec, quiesce=None):
        """Switch every disk of ``group`` in one ``snapshotCreateXML``.

        :param quiesce: ``(mode, outcome)`` for :meth:`_quiesced`, around
            the paused section only."""
        mode, outcome = quiesce or ('off', {})

        def current(target, active, new):
            chain = self._live_chain(dom, target)
            if chain and _same(chain[0], new) and len(chain) > 1 \
                    and _same(chain[1], active):
                return True
            return False if chain and _same(chain[0], active) else None

        news = {t: n for t, _, n in group}
        if self._done_or_refuse(group, current, 'the running domain'):
            LOG.info('Snapshot onto %(new)s already done',
                     {'new': list(news.values())})
            outcome['consistency_reason'] = (
                'the switch was found done when the operation was run '
                'again; whether the guest was frozen is not known')
            self._set_config_sources(dom, news)
            return
        for target, active, _ in group:
            self._refuse_if_busy(dom, target, active)
        for _, active, new in group:
            with rec.step('prepare', image=new):
                images.create_overlay(new, active, exist_ok=True)
                images.flush(new)
                images.flush(active)
        snap_xml = self._snapshot_xml(dom, news)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        detail = self._switch_detail(group)
        try:
            # The freeze after every overlay is ready, right before the
            # pause; the thaw after the resume, in a finally.
            with self._quiesced(dom, mode, rec, outcome):
                if self.snapshot_pause == 'suspend':
                    self._snapshot_suspended(dom, snap_xml, flags, rec,
                                             detail)
                else:
                    self._snapshot_transaction(dom, snap_xml, flags, rec,
                                               detail)
        except BaseException as exc:
            switched = self._switched(dom, group)
            if not all(switched) or isinstance(exc, exception.ResumeFailed):
                for (_, _, new), done in zip(group, switched):
                    if not done:
                        self._drop_overlay(new)
                raise
            LOG.warning('The switch to %(new)s happened although %(exc)s; '
                        'keeping it', {'new': list(news.values()),
                                       'exc': exc})
        # libvirt updates the persistent definition as well; make sure.
        self._set_config_sources(dom, news)
        LOG.info('Created online snapshot of %(n)d disk(s), new live '
                 'layers %(new)s, paused %(ms)s ms',
                 {'n': len(group), 'new': list(news.values()),
                  'ms': rec.pause_ms})

    # -- quiesce -------------------------------------------------------------
    def can_quiesce(self, disk):
        """Always: :meth:`_quiesced` freezes through libvirt
        (``fsFreeze``, the domain's guest agent) or says why not (no
        guest agent channel, an agent that does not answer)."""
        return True

    def thaw_guest(self, disk):
        """Thaw the guest of ``disk`` (``fsThaw``) if it is frozen; for
        recovery and the thaw retries.

        :returns: True if filesystems were frozen and are thawed now
            (False too for a domain that is gone, shut off or has no
            guest agent channel: nothing of it is frozen).
        :raises LibvirtError: the guest agent could not be reached.
        """
        try:
            dom = self._domain(disk)
        except exception.InvalidRequest as exc:
            LOG.warning('Nothing to thaw: %(exc)s', {'exc': exc})
            return False
        if not self._active(dom) or self._guest_agent_state(dom) is None:
            return False
        return self._fs_thaw(dom) > 0

    def _guest_agent_state(self, dom):
        """The running domain's guest agent channel
        (``org.qemu.guest_agent.0``): None if it has none, else its
        ``state`` in the live XML (``connected`` while an agent in the
        guest has the port open, ``disconnected``; ``''`` when libvirt
        does not say)."""
        for target in self._xml(dom).findall('./devices/channel/target'):
            if target.get('name') == GUEST_AGENT_CHANNEL:
                return target.get('state') or ''
        return None

    def _agent_timeout(self, dom, default=False):
        """Bound libvirt's wait for the guest agent's answers to
        ``quiesce_timeout`` (libvirt waits forever by default, and keeps
        a bound for the domain while it runs); with ``default``, give the
        domain back libvirt's default (libvirt has no getter for what was
        set before), so other users of the guest agent (nova's password
        set, ``guest-sync``) do not keep livesnap's bound."""
        timeout = AGENT_RESPONSE_TIMEOUT_DEFAULT if default else max(
            1, int(math.ceil(self.quiesce_timeout)))
        try:
            dom.agentSetResponseTimeout(timeout, 0)
        except AttributeError:
            LOG.warning('libvirt-python has no agentSetResponseTimeout: '
                        'the guest agent of %(dom)s is not bounded by the '
                        'quiesce timeout', {'dom': dom.name()})
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot set the guest agent timeout of %s'
                        % dom.name(), exc)

    def _fs_thaw(self, dom):
        """``fsThaw``: :returns: the number of filesystems thawed."""
        self._agent_timeout(dom)
        try:
            thawed = dom.fsThaw()
        except libvirt.libvirtError as exc:
            raise _wrap('fsThaw of %s failed' % dom.name(), exc)
        self._agent_timeout(dom, default=True)
        return thawed

    @contextlib.contextmanager
    def _quiesced(self, dom, mode, rec, outcome):
        """Freeze the guest's filesystems around the block (the pause),
        thaw them after it in a ``finally``.

        ``mode`` ``off``: nothing.  A domain without the guest agent's
        channel, or whose channel libvirt reports ``disconnected`` (no
        qemu-ga in the guest), is not frozen: ``required`` fails,
        ``preferred`` goes on crash-consistent.  Otherwise libvirt asks
        the domain's guest agent to freeze (``fsFreeze``, step ``freeze``,
        journaled durably before it is sent, so a restarted agent thaws),
        its answer bounded by ``quiesce_timeout``; if the freeze fails or
        answers too late, the guest is thawed at once and the snapshot goes
        on crash-consistent (``preferred``) or the create fails before the
        pause (``required``).  After the block: ``fsThaw`` (step
        ``thaw``).  ``outcome`` gets ``consistency`` and
        ``consistency_reason``.

        :raises QuiesceFailed: ``required`` and no freeze.
        """
        outcome.update(consistency='crash', consistency_reason='quiesce off')
        if mode == 'off':
            yield
            return
        failed = None
        state = self._guest_agent_state(dom)
        if state is None:
            failed = ('the domain has no guest agent channel (%s)'
                      % GUEST_AGENT_CHANNEL)
        elif state == 'disconnected':
            # No agent runs in the guest: nothing is sent, nothing frozen.
            failed = ('the guest agent is not connected (no qemu-ga '
                      'answers on %s)' % GUEST_AGENT_CHANNEL)
        else:
            started = time.monotonic()
            try:
                with rec.step('freeze', domain=dom.UUIDString(),
                              timeout=self.quiesce_timeout) as entry:
                    self._agent_timeout(dom)
                    try:
                        count = dom.fsFreeze()
                    except libvirt.libvirtError as exc:
                        raise _wrap('fsFreeze of %s failed' % dom.name(),
                                    exc)
                    entry.setdefault('detail', {})['filesystems'] = count
                    took = time.monotonic() - started
                    if took > self.quiesce_timeout:
                        raise LibvirtError(
                            'The guest agent of %s froze the filesystems '
                            'after %.1f s, past the quiesce timeout of '
                            '%.1f s' % (dom.name(), took,
                                        self.quiesce_timeout))
            except exception.AgentError as exc:
                # It may have frozen after all, late: never leave it so.
                self._thaw(dom, rec)
                failed = ('the guest agent did not freeze the filesystems: '
                          '%s' % exc)
        if failed is not None:
            if mode == 'required':
                raise exception.QuiesceFailed(
                    'Quiesce required but %s' % failed)
            LOG.warning('Snapshot of %(dom)s goes on crash-consistent: '
                        '%(why)s', {'dom': dom.name(), 'why': failed})
            outcome['consistency_reason'] = failed
            yield
            return
        outcome.update(consistency='application',
                       consistency_reason='filesystems frozen by the guest '
                                          'agent during the pause')
        try:
            yield
        finally:
            self._thaw(dom, rec)

    def _thaw(self, dom, rec):
        """Step ``thaw`` (``fsThaw``).  Logs, never raises: the journal
        keeps the guest marked frozen and the agent retries (and its
        recovery thaws)."""
        try:
            with rec.step('thaw', domain=dom.UUIDString()) as entry:
                entry.setdefault('detail', {})['filesystems'] = \
                    self._fs_thaw(dom)
        except exception.AgentError as exc:
            LOG.error('Could not thaw the guest of %(dom)s: %(exc)s',
                      {'dom': dom.name(), 'exc': exc})

    @staticmethod
    def _drop_overlay(new):
        try:
            if not images.open_by(new) and not images.is_locked(new):
                images.remove(new)
        except exception.AgentError as exc:
            LOG.error('Cannot clean up %(new)s: %(exc)s',
                      {'new': new, 'exc': exc})

    def _snapshot_transaction(self, dom, snap_xml, flags, rec, detail):
        """One ``snapshotCreateXML``: libvirt adds the new layer's nodes
        and switches the disk in a QEMU ``transaction``, which drains the
        disk's I/O; the vCPUs are not stopped.  The pause recorded is the
        agent's view of the call (no QEMU timestamp reaches libvirt's
        clients), an upper bound of the drained section."""
        with rec.step('pause', by='libvirt (QEMU transaction drains the '
                                  'disk; vCPUs run)',
                      measured='agent, around snapshotCreateXML'):
            rec.mark_paused()
        try:
            with rec.step('snapshot', **detail):
                try:
                    dom.snapshotCreateXML(snap_xml, flags)
                except libvirt.libvirtError as exc:
                    raise _wrap('snapshotCreateXML onto %s failed'
                                % detail.get('active',
                                             detail.get('actives')), exc)
        finally:
            with rec.step('resume', by='libvirt (end of the transaction)'):
                rec.mark_resumed()

    def _snapshot_suspended(self, dom, snap_xml, flags, rec, detail):
        """``suspend``, ``snapshotCreateXML``, ``resume`` (in a
        ``finally``, with retries).  ``pause_ms`` is QEMU's STOP to RESUME
        window (its own timestamps, see _PauseClock) when the events came,
        else the agent's view (``suspend`` sent to ``resume`` returned)."""
        try:
            state, _reason = dom.state()
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot get the state of %s' % dom.name(), exc)
        was_running = state == libvirt.VIR_DOMAIN_RUNNING
        watchdog = None
        try:
            with rec.step('pause', was_running=was_running, by='suspend'):
                self._clock.mark(dom.UUIDString())
                rec.mark_paused()
                if was_running:
                    watchdog = self._suspend(dom)
            with rec.step('snapshot', **detail):
                try:
                    dom.snapshotCreateXML(snap_xml, flags)
                except libvirt.libvirtError as exc:
                    raise _wrap('snapshotCreateXML onto %s failed'
                                % detail.get('active',
                                             detail.get('actives')), exc)
        finally:
            rescued = self._finish_suspend(dom, rec, was_running, watchdog)
        if rescued:
            # The caller keeps the switch if it happened (as the QEMU
            # driver does past its deadline).
            raise exception.PauseDeadlineExceeded(
                'Domain %s stayed suspended past the pause deadline '
                '(%.1f ms); the watchdog resumed it'
                % (dom.name(), self.pause_deadline * 1000.0))

    def _suspend(self, dom):
        """``suspend`` ``dom`` under a watchdog armed first.

        :returns: the armed _PauseWatchdog.
        """
        watchdog = _PauseWatchdog(self, dom, self.pause_deadline)
        watchdog.arm()
        try:
            dom.suspend()
        except libvirt.libvirtError as exc:
            # The caller's finally resumes it if the suspend happened.
            watchdog.disarm()
            raise _wrap('Cannot suspend %s' % dom.name(), exc)
        return watchdog

    def _finish_suspend(self, dom, rec, was_running, watchdog=None):
        """The ``resume`` step after a ``suspend`` (with retries); the
        pause on QEMU's clock when its events came.  ``watchdog`` (the
        one armed at the suspend) is stopped first; if it resumed the
        domain, the step says so and the pause ends when it did.

        :returns: True if the watchdog resumed the domain.
        """
        rescued = watchdog is not None and watchdog.disarm()
        detail = {'left_paused': not was_running}
        if rescued:
            detail.update(by='watchdog',
                          deadline_ms=self.pause_deadline * 1000.0)
        elif watchdog is not None and watchdog.error:
            detail['watchdog_error'] = watchdog.error
        with rec.step('resume', **detail):
            qemu_ms = None
            if was_running:
                # Also when the watchdog resumed it: a suspend that reached
                # libvirt after the watchdog looked is undone here.
                self._resume(dom)
                qemu_ms = self._clock.window_ms(dom.UUIDString())
            rec.mark_resumed(qemu_pause_ms=qemu_ms,
                             resumed_at=watchdog.resumed_at
                             if rescued else None)
        return rescued

    # -- delete ---------------------------------------------------------------
    def delete_image(self, image, rec):
        """Delete a layer nothing is built on.

        :raises ImageInUse: a process holds it open.
        """
        path = self._confine(image['path'] if isinstance(image, dict)
                             else image)
        with rec.step('delete', image=path):
            if not os.path.lexists(path):
                LOG.info('Image %(path)s already gone', {'path': path})
            else:
                self._refuse_if_open(path)
                images.remove(path)
        return {}

    # -- merge ----------------------------------------------------------------
    def merge(self, disk, snapshot, parent, child, rec, progress=None,
              child_is_leaf=False, cancelled=None):
        """base.Driver.merge: ``_merge``, and the size of the file that
        now holds the child."""
        result = self._merge(disk, snapshot, parent, child, rec,
                             progress=progress, child_is_leaf=child_is_leaf,
                             cancelled=cancelled)
        result['child_size_bytes'] = images.actual_size(
            self._confine(result['child']['path']))
        return result

    def _merge(self, disk, snapshot, parent, child, rec, progress=None,
               child_is_leaf=False, cancelled=None):
        """Merge layer ``snapshot`` with its only ``child`` (see
        base.Driver.merge).

        Online, the live layer is the child: ``blockPull`` to ``parent``
        streams the snapshot into it, or, when cheaper (the child holds
        less data), ``blockCommit`` of the active layer and a pivot make
        the snapshot's file the live layer.  A child below the live layer
        is committed into the snapshot (``blockCommit``): libvirt streams
        only into the live layer.  Layers the running domain does not use
        and disks of a shut-off domain are merged with qemu-img.

        :raises PathNotAllowed, ImageInUse, ImageError, LibvirtError,
            NoSpace, Cancelled, InvalidRequest:
        """
        snap = self._confine(snapshot['path'])
        child_path = self._confine(child['path'])
        parent_path = self._confine(parent['path']) if parent else None
        if len({snap, child_path, parent_path}) != 3:
            raise exception.InvalidRequest(
                'snapshot, parent and child must be three different images')
        dom = self._domain(disk)
        target = disk['target']
        child_is_live = 'target' in child or _same(child_path, disk['path'])
        online = self._active(dom)

        def result(direction, holder, is_online):
            new_disk = dict(disk)
            if child_is_live:
                new_disk['path'] = holder['path']
                holder = new_disk
            return {'child': holder, 'disk': new_disk,
                    'direction': direction, 'online': is_online}

        streamed = result('stream', child, online)
        committed = result('commit', image_locator(snapshot['path']), online)

        if not os.path.lexists(snap):
            backing = images.backing_file(child_path)
            if _same(backing, parent_path):
                LOG.info('Merge of %(snap)s into %(child)s already done',
                         {'snap': snap, 'child': child_path})
                images.purge(snap)
                return streamed
            raise exception.ImageError(
                '%s is missing but %s still has backing %s'
                % (snap, child_path, backing))
        if not os.path.lexists(child_path) \
                and _same(images.backing_file(snap), parent_path):
            LOG.info('Commit of %(child)s into %(snap)s already done',
                     {'snap': snap, 'child': child_path})
            images.purge(child_path)
            if child_is_live:
                self._set_config_source(dom, target, snap)
            return committed

        if online:
            chain = self._live_chain(dom, target)
            self._refuse_if_busy(dom, target, disk['path'], ours=(
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL,
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT,
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT))
            job = self._job(dom, target)
            in_chain = [c for c in chain if _same(c, child_path)]
            if job.get('type') == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL:
                self._pull(dom, target, snap, parent_path, child_path, rec,
                           progress, cancelled)
                return streamed
            if job.get('type') in (
                    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT,
                    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT) \
                    or (not in_chain and chain and _same(chain[0], snap)
                        and child_is_live):
                self._commit(dom, target, snap, parent_path, child_path,
                             rec, progress, cancelled, child_is_live)
                return committed
            if in_chain:
                if _same(chain[0], child_path):
                    if child_is_leaf and self._cheaper_to_commit(
                            snap, child_path):
                        self._commit(dom, target, snap, parent_path,
                                     child_path, rec, progress, cancelled,
                                     True)
                        return committed
                    self._pull(dom, target, snap, parent_path, child_path,
                               rec, progress, cancelled)
                    return streamed
                self._commit(dom, target, snap, parent_path, child_path,
                             rec, progress, cancelled, False)
                return committed
            if child_is_live:
                raise exception.InvalidRequest(
                    '%s is not the live layer of %s' % (child_path, target))
        streamed['online'] = committed['online'] = False
        if child_is_leaf and self._cheaper_to_commit(snap, child_path):
            self._commit_offline(snap, parent_path, child_path, rec)
            if child_is_live:
                self._set_config_source(dom, target, snap)
            return committed
        self._merge_offline(snap, parent_path, child_path, rec)
        return streamed

    @staticmethod
    def _cheaper_to_commit(snap, child):
        """True if the child holds less data than the snapshot."""
        return images.actual_size(child) < images.actual_size(snap)

    @staticmethod
    def _job(dom, target):
        """``blockJobInfo`` of ``target``: ``{}`` when no job runs."""
        try:
            return dom.blockJobInfo(target, 0) or {}
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot query the block job of %s' % target, exc)

    def _wait_job(self, dom, target, progress, cancelled, ready=False):
        """Poll ``blockJobInfo`` until the job of ``target`` is gone (or,
        with ``ready``, has copied everything: an active commit waiting for
        its pivot).

        :raises Cancelled: ``cancelled()`` turned true (the job is
            aborted; the chain is as it was).
        :raises LibvirtError: the job overran ``job_timeout``.
        """
        start = time.monotonic()
        while True:
            job = self._job(dom, target)
            if not job:
                return job
            end = job.get('end') or 0
            cur = job.get('cur') or 0
            if progress is not None:
                try:
                    progress(100.0 * cur / end if end else 0.0)
                except Exception:  # noqa - a reporting bug must not abort
                    LOG.exception('Progress callback failed')
            if ready and end and cur == end and self._mirror_ready(dom,
                                                                   target):
                return job
            if cancelled is not None and cancelled():
                self._abort(dom, target)
                raise exception.Cancelled(
                    'The merge was cancelled by an administrator while it '
                    'copied; the images are as they were')
            if (self.job_timeout is not None
                    and time.monotonic() - start > self.job_timeout):
                self._abort(dom, target)
                raise LibvirtError('The block job of %s timed out' % target)
            time.sleep(self.job_poll_interval)

    def _mirror_ready(self, dom, target):
        """True once libvirt marks the active commit ready for a pivot."""
        mirror = self._disk(self._xml(dom), target).find('mirror')
        return mirror is not None and mirror.get('ready') == 'yes'

    def _abort(self, dom, target):
        try:
            dom.blockJobAbort(target, 0)
        except libvirt.libvirtError as exc:
            LOG.warning('Could not abort the block job of %(target)s: '
                        '%(exc)s', {'target': target, 'exc': exc})

    def _flush(self, dom, rec):
        """Make QEMU write the image metadata it caches (the merged
        layer's new cluster mappings) before the layer it no longer needs
        is deleted: libvirt has no flush call, but QEMU's ``stop`` flushes
        every image, so the domain is suspended and resumed (in a
        ``finally``, with retries).  Without it a host crash could leave
        the survivor's mappings unwritten and their data's only other copy
        deleted.  Skipped for a domain that is not running."""
        try:
            state, _reason = dom.state()
        except libvirt.libvirtError as exc:
            raise _wrap('Cannot get the state of %s' % dom.name(), exc)
        if state != libvirt.VIR_DOMAIN_RUNNING:
            return
        watchdog = None
        try:
            with rec.step('pause', was_running=True, by='suspend',
                          why='QEMU flushes its image metadata'):
                self._clock.mark(dom.UUIDString())
                rec.mark_paused()
                watchdog = self._suspend(dom)
        finally:
            # A watchdog's resume is no failure here: the flush is done
            # once suspend has returned.
            self._finish_suspend(dom, rec, True, watchdog)

    def _delete_after_merge(self, rec, drop, dom=None):
        if dom is not None:
            self._flush(dom, rec)
        with rec.step('delete', image=drop):
            # libvirt closes the layer it dropped from the chain as the
            # job ends; give it a moment before refusing.
            for _ in range(50):
                if not images.open_by(drop):
                    break
                time.sleep(0.1)
            self._refuse_if_open(drop)
            images.trash(drop)
        with rec.step('purge', image=drop):
            images.purge(drop)

    def _pull(self, dom, target, snap, parent, child, rec, progress,
              cancelled):
        """Stream ``snap`` into the live layer ``child`` (``blockPull``, or
        ``blockRebase`` to ``parent``); then delete ``snap``'s file."""
        job = self._job(dom, target)
        if not job:
            chain = self._live_chain(dom, target)
            if any(_same(c, snap) for c in chain):
                self._ensure_space(child, images.actual_size(snap),
                                   'the merge')
                with rec.step('prepare', image=child, direction='stream'):
                    images.flush(snap)
                try:
                    if parent is None:
                        flags = (libvirt.VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES
                                 if self.merge_speed else 0)
                        dom.blockPull(target, self.merge_speed, flags)
                    else:
                        flags = (
                            libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES
                            if self.merge_speed else 0)
                        dom.blockRebase(target, _as_in(chain, parent),
                                        self.merge_speed, flags)
                except libvirt.libvirtError as exc:
                    raise _wrap('Cannot stream %s into %s' % (snap, child),
                                exc)
        with rec.step('merge', job='pull', image=child, onto=parent,
                      direction='stream'):
            self._wait_job(dom, target, progress, cancelled)
        with rec.step('reparent', image=child, parent=parent):
            chain = self._live_chain(dom, target)
            if any(_same(c, snap) for c in chain):
                raise LibvirtError(
                    'The stream of %s into %s ended without merging it'
                    % (snap, child))
            backing = images.backing_file(child)
            if not _same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s after the stream, expected %s'
                    % (child, backing, parent))
        if progress is not None:
            progress(100.0)
        self._delete_after_merge(rec, snap, dom)
        LOG.info('Streamed %(snap)s into %(child)s online',
                 {'snap': snap, 'child': child})

    def _commit(self, dom, target, snap, parent, child, rec, progress,
                cancelled, active):
        """Commit ``child`` into ``snap`` with ``blockCommit``; for the
        live layer (``active``) wait until the job is ready and pivot the
        disk onto ``snap`` (``blockJobAbort`` with ``PIVOT``: QEMU drains
        the disk's I/O for the switch).  Then delete ``child``'s file."""
        job = self._job(dom, target)
        chain = self._live_chain(dom, target)
        done = not any(_same(c, child) for c in chain)
        if not job and not done:
            self._ensure_space(snap, images.actual_size(child), 'the merge')
            with rec.step('prepare', image=snap, direction='commit'):
                images.flush(child)
            flags = 0
            if active:
                flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
            if self.merge_speed:
                flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
            try:
                dom.blockCommit(target, _as_in(chain, snap),
                                _as_in(chain, child), self.merge_speed, flags)
            except libvirt.libvirtError as exc:
                raise _wrap('Cannot commit %s into %s' % (child, snap), exc)
            job = self._job(dom, target)
        if job:
            with rec.step('merge', job='commit', image=snap, source=child,
                          direction='commit'):
                self._wait_job(dom, target, progress, cancelled,
                               ready=active)
            if active:
                self._pivot(dom, target, rec)
        with rec.step('reparent', image=snap, parent=parent):
            chain = self._live_chain(dom, target)
            if any(_same(c, child) for c in chain):
                raise LibvirtError(
                    'The commit of %s into %s ended without dropping it'
                    % (child, snap))
            backing = images.backing_file(snap)
            if not _same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s after the commit, expected %s'
                    % (snap, backing, parent))
        if active:
            self._set_config_source(dom, target, snap)
        if progress is not None:
            progress(100.0)
        self._delete_after_merge(rec, child, dom)
        LOG.info('Committed %(child)s into %(snap)s online',
                 {'snap': snap, 'child': child})

    def _pivot(self, dom, target, rec):
        """Switch the disk onto the commit's base; the I/O is drained for
        the switch (measured by the agent around the call)."""
        try:
            with rec.step('pause', was_running=True,
                          drained_by='qemu (job-complete)',
                          measured='agent, around blockJobAbort(PIVOT)'):
                rec.mark_paused()
            with rec.step('snapshot', pivot=target):
                for attempt in range(50):
                    try:
                        dom.blockJobAbort(
                            target,
                            libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                        break
                    except libvirt.libvirtError as exc:
                        # Not ready yet (cur == end before QEMU's READY).
                        if (exc.get_error_code() !=
                                libvirt.VIR_ERR_BLOCK_COPY_ACTIVE
                                or attempt == 49):
                            raise _wrap('Cannot pivot %s' % target, exc)
                        time.sleep(self.job_poll_interval)
        finally:
            with rec.step('resume', by='qemu (pivot)'):
                rec.mark_resumed()

    def _merge_offline(self, snap, parent, child, rec):
        self._refuse_if_open(child)
        with rec.step('merge', image=child, onto=parent, direction='stream'):
            backing = images.backing_file(child)
            if _same(backing, parent):
                LOG.info('%(child)s already rebased onto %(parent)s',
                         {'child': child, 'parent': parent})
            elif _same(backing, snap):
                self._ensure_space(child, images.actual_size(snap),
                                   'the merge')
                images.rebase(child, parent, safe=True)
            else:
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (child, backing, snap))
        with rec.step('reparent', image=child, parent=parent):
            backing = images.backing_file(child)
            if not _same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s after rebase, expected %s'
                    % (child, backing, parent))
        with rec.step('delete', image=snap):
            self._refuse_if_open(snap)
            images.remove(snap)
        LOG.info('Merged %(snap)s into %(child)s offline',
                 {'snap': snap, 'child': child})

    def _commit_offline(self, snap, parent, child, rec):
        self._refuse_if_open(child)
        self._refuse_if_open(snap)
        with rec.step('merge', image=snap, source=child,
                      direction='commit'):
            backing = images.backing_file(child)
            if not _same(backing, snap):
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (child, backing, snap))
            self._ensure_space(snap, images.actual_size(child), 'the merge')
            images.commit(child)
        with rec.step('reparent', image=snap, parent=parent):
            backing = images.backing_file(snap)
            if not _same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (snap, backing, parent))
        with rec.step('delete', image=child):
            images.remove(child)
        LOG.info('Committed %(child)s into %(snap)s offline',
                 {'snap': snap, 'child': child})

    # -- revert ---------------------------------------------------------------
    def revert(self, disk, snapshot, layer_name, rec):
        """Put a new live layer on ``snapshot`` and point the domain's
        definition at it.

        :raises ServerRunning: the domain runs.
        """
        snap = self._confine(snapshot['path'])
        new_path = self.layer_locator(disk, layer_name)['path']
        new = self._confine(new_path)
        dom = self._domain(disk)
        if self._active(dom):
            raise exception.ServerRunning(
                'The server is running; shut it off before reverting')
        active = self._confine(disk['path'])
        if images.is_locked(active):
            raise exception.ServerRunning(
                '%s is in use by a running process' % active)
        with rec.step('prepare', image=new, backing=snap):
            images.create_overlay(new, snap, exist_ok=True)
        with rec.step('snapshot', active=new):
            self._set_config_source(dom, disk['target'], new)
        return {'disk': disk_locator(disk['domain'], disk['target'],
                                     new_path),
                'online': False}

    def clone(self, snapshot, layer_name, mode, rec, progress=None):
        """See base.Driver.clone: image work only (``qemu-img``), as the
        QEMU driver does it; no domain is touched.

        :raises InvalidRequest, PathNotAllowed, ImageError, NoSpace:
        """
        snap = self._confine(snapshot.get('path'))
        new = self._confine(self.layer_locator(snapshot, layer_name)['path'])
        if mode == 'flat' and not os.path.lexists(new):
            self._ensure_space(new, images.actual_size(snap), 'the copy')
        backing = images.clone_layer(snap, new, mode, rec, progress)
        return {'image': image_locator(new),
                'backing': image_locator(snap) if backing else None,
                'size_bytes': images.actual_size(new)}

    def check(self, locator, kind='image'):
        """base.Driver.check, and the path inside the image directories
        (a disk locator also names its domain and target)."""
        super().check(locator, kind)
        self._confine(locator.get('path'))
        if kind == 'disk' and not (isinstance(locator.get('domain'), str)
                                   and isinstance(locator.get('target'), str)):
            raise exception.InvalidRequest(
                'A libvirt disk locator names its domain and target: %r'
                % (locator,))

    # -- the audit ------------------------------------------------------------
    def inspect(self, locators):
        """See base.Driver.inspect, as the QEMU driver does it: each
        locator's file (whether it exists, the image it is built on,
        whether ``qemu-img check`` passes, skipped for an image a running
        QEMU writes); ``files`` are the image directories' regular files
        and symbolic links no locator names, each with the locator it is
        a leftover of (``x.qcow2.deleted`` of ``x.qcow2``'s), or None."""
        result = {'images': [], 'files': []}
        named = {}
        for loc in list(locators or [])[:_INSPECT_MAX]:
            entry = {'locator': loc, 'exists': False, 'backing': None,
                     'check': None, 'error': None}
            try:
                self.check(loc)
                real = self._confine(loc['path'])
                named[real] = loc
                entry['exists'] = os.path.exists(real)
                if entry['exists']:
                    backing = images.backing_file(real)
                    entry['backing'] = (image_locator(backing)
                                        if backing else None)
                    entry['check'] = self._check(real)
            except exception.AgentError as exc:
                entry['error'] = str(exc)
            result['images'].append(entry)
        for directory in self.image_dirs:
            for root, _dirs, files in os.walk(directory):
                for name in files:
                    path = os.path.join(root, name)
                    if not _is_file(path) or os.path.realpath(path) in named:
                        continue
                    result['files'].append({
                        'path': path,
                        'locator': named.get(os.path.realpath(
                            _WORK_SUFFIX.sub('', path)))})
        return result

    @staticmethod
    def _check(path):
        try:
            if images.is_locked(path):
                return 'ok'  # in use for writing: QEMU checks it on open
            images.check(path, force_share=True)
            return 'ok'
        except exception.ImageError as exc:
            return str(exc)

    def remove(self, path):
        """Remove an orphaned file (refuses one a process holds open)."""
        try:
            real = self._confine(path)
            if os.path.lexists(real):
                self._refuse_if_open(real)
                images.remove(real)
        except exception.AgentError as exc:
            return {'removed': False, 'error': str(exc)}
        return {'removed': True, 'error': ''}
