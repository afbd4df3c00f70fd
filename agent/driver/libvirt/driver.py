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
import threading
import time
import xml.etree.ElementTree as ET

import tenacity

from agent.driver import fileimage
from agent.driver.libvirt import guest as lvguest
from agent.driver.libvirt import pause
from agent import exception
from agent import images

try:
    import libvirt
except ImportError:  # pragma: no cover - the driver then refuses to start
    libvirt = None

LOG = logging.getLogger(__name__)

NAME = 'libvirt'

PAUSE_MODES = ('transaction', 'suspend')


def image_locator(path):
    """The image locator of file ``path``."""
    return {'driver': NAME, 'path': path}


def disk_locator(uuid, target, path):
    """The disk locator of ``target`` of domain ``uuid`` running on
    ``path``.
    """
    return {'driver': NAME, 'domain': uuid, 'target': target, 'path': path}


def _as_in(chain, path):
    """``path`` spelled as libvirt has it in ``chain`` (libvirt looks
    layers up by the name it was given).
    """
    if path is None:
        return None
    for name in chain:
        if fileimage.same(name, path):
            return name
    return path


class LibvirtDriver(fileimage.FileImageDriver):
    """Snapshot, merge and delete the qcow2 layers of libvirt domains.

    Overrides of :class:`agent.driver.fileimage.FileImageDriver`: the VM
    is a libvirt domain, reached through the libvirt API at ``uri`` (one
    connection, opened again when lost) and called through
    :class:`agent.driver.libvirt.guest.Guest`; the online halves of create
    and merge are ``snapshotCreateXML``, ``blockPull`` and ``blockCommit``
    with a pivot; a switch or merge that runs offline also points the
    domain's persistent definition at the new live layer; quiesce is
    libvirt's ``fsFreeze``; a disk locator also names its domain and
    target.

    :param image_dirs, resume_retries, job_poll_interval, job_timeout,
        reserved_bytes, merge_speed, quiesce_timeout: see
        FileImageDriver (``job_poll_interval``: ``[libvirt]
        job_poll_interval``, between ``blockJobInfo`` polls; past
        ``job_timeout`` the job is aborted and the merge fails).
    :param pause_deadline: seconds a domain the driver suspended may stay
        so before a watchdog resumes it (see pause.PauseWatchdog).
    :param uri: libvirt connection URI (``[libvirt] uri``).
    :param snapshot_pause: ``transaction`` or ``suspend`` (``[libvirt]
        snapshot_pause``).
    """

    name = NAME

    def __init__(self, image_dirs, uri='qemu:///system',
                 snapshot_pause='transaction', **options):
        super().__init__(image_dirs, **options)
        if snapshot_pause not in PAUSE_MODES:
            raise exception.InvalidRequest(
                'snapshot_pause must be one of %s, not %r'
                % (', '.join(PAUSE_MODES), snapshot_pause))
        self.uri = uri
        self.snapshot_pause = snapshot_pause
        self._conn = None
        self._conn_lock = threading.Lock()
        self._clock = pause.PauseClock()

    @classmethod
    def conf_options(cls, conf):
        return dict(super().conf_options(conf),
                    uri=conf.libvirt.uri,
                    snapshot_pause=conf.libvirt.snapshot_pause,
                    job_poll_interval=conf.libvirt.job_poll_interval)

    # -- the connection and the domain's XML --------------------------------
    def _connection(self):
        """The libvirt connection, opened again if it was lost.

        :raises LibvirtError: libvirt-python is missing or libvirtd does
            not answer.
        """
        if libvirt is None:
            raise lvguest.LibvirtError(
                'The libvirt driver needs libvirt-python '
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
            pause.PauseClock.start_loop()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise lvguest.wrap(
                    'Cannot connect to libvirt at %s' % self.uri, exc)
            self._clock.register(self._conn)
            return self._conn

    def _connection_alive(self):
        """True if the current libvirt connection still answers."""
        with self._conn_lock:
            try:
                return bool(self._conn is not None and self._conn.isAlive())
            except libvirt.libvirtError:
                return False

    def _domain(self, disk):
        """The domain of a disk locator: a lvguest.Guest.

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
            dom = self._connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise exception.InvalidRequest(
                    'No libvirt domain %s on this host' % uuid)
            raise lvguest.wrap('Cannot look up libvirt domain %s' % uuid,
                               exc)
        return lvguest.Guest(dom)

    def _refuse_if_busy(self, guest, target, path, ours=()):
        """:raises ImageInUse: a block job runs on ``target`` that is not
        one of the job types ``ours`` (a job of an earlier attempt, which
        the caller waits for).
        """
        job = guest.block_job(target)
        if job and job.get('type') not in ours:
            raise exception.ImageInUse(
                'Disk %s of domain %s is busy with a block job (type %s) '
                'that is not this operation\'s'
                % (target, guest.name, job.get('type')), image=path)

    def _set_config_source(self, guest, target, path):
        """Point ``target`` of the domain's persistent definition at
        ``path`` (see _set_config_sources).
        """
        self._set_config_sources(guest, {target: path})

    def _set_config_sources(self, guest, paths_by_target):
        """Point each target of the domain's persistent definition at its
        path in ``paths_by_target`` (the backing chain is probed from the
        image at start), in one ``defineXML``.  Does nothing for a
        transient domain or when it already does.
        """
        if not guest.is_persistent():
            return
        root = guest.xml(inactive=True)
        changed = False
        for target, path in sorted(paths_by_target.items()):
            disk = lvguest.find_disk(root, target)
            source = disk.find('source')
            if source is not None and fileimage.same(
                    source.get('file'), path) \
                    and not disk.findall('backingStore'):
                continue
            if source is None:
                source = ET.SubElement(disk, 'source')
            source.set('file', path)
            for backing in disk.findall('backingStore'):
                disk.remove(backing)
            changed = True
        if not changed:
            return
        # Called once the disks are switched: a libvirtd that dies here
        # (it comes back) must not fail an operation whose switch
        # happened, so the define is tried again over a new connection.
        xml = ET.tostring(root, encoding='unicode')
        deadline = time.monotonic() + 30
        while True:
            try:
                self._connection().defineXML(xml)
                break
            except (libvirt.libvirtError, lvguest.LibvirtError) as exc:
                if self._connection_alive() \
                        or time.monotonic() > deadline:
                    raise lvguest.wrap(
                        'Cannot point %s of %s at %s'
                        % (', '.join(sorted(paths_by_target)), guest.name,
                           ', '.join(paths_by_target[t]
                                     for t in sorted(paths_by_target))),
                        exc)
                LOG.warning('libvirtd went away while pointing domain '
                            '%(dom)s at its new layers; trying again',
                            {'dom': guest.name})
                time.sleep(0.5)
        LOG.info('Pointed %(targets)s of domain %(dom)s at %(paths)s',
                 {'targets': ', '.join(sorted(paths_by_target)),
                  'dom': guest.name,
                  'paths': ', '.join(paths_by_target[t]
                                     for t in sorted(paths_by_target))})

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
        named by target.
        """
        try:
            doms = self._connection().listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise lvguest.wrap('Cannot list the domains', exc)
        vms = []
        for dom in doms:
            guest = lvguest.Guest(dom)
            try:
                uuid = guest.uuid
                root = guest.xml()
                running = guest.is_active()
                name = guest.name
            except lvguest.LibvirtError as exc:
                # A domain undefined meanwhile.
                LOG.debug('Skipping a domain: %(exc)s', {'exc': exc})
                continue
            disks = []
            for disk in lvguest.disk_elements(root):
                path = lvguest.source_file(disk)
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
        domain libvirt does not know (nothing runs it).
        """
        try:
            guest = self._domain(disk)
        except exception.InvalidRequest:
            return False
        return guest.is_active()

    def resume(self, disk):
        """Resume the disk's domain if it is paused.

        :returns: True if it was resumed (False for a domain libvirt no
            longer knows: nothing is paused).
        """
        try:
            guest = self._domain(disk)
        except exception.InvalidRequest as exc:
            LOG.warning('Nothing to resume: %(exc)s', {'exc': exc})
            return False
        if guest.state() != libvirt.VIR_DOMAIN_PAUSED:
            return False
        self._resume(guest)
        LOG.info('Resumed domain %(dom)s', {'dom': guest.name})
        return True

    def _resume_once(self, guest, uuid, fresh):
        """One attempt; after a failure (``fresh``) the domain is looked
        up again, over a new connection if libvirtd's was lost.

        :returns: True if the domain was paused and is resumed now.
        """
        if fresh:
            try:
                guest = lvguest.Guest(
                    self._connection().lookupByUUIDString(uuid))
            except libvirt.libvirtError as exc:
                raise lvguest.wrap('Cannot resume domain %s' % uuid, exc)
        return guest.resume_if_paused()

    def _resume(self, guest):
        """Resume ``guest`` with retries.

        :raises ResumeFailed: after ``resume_retries`` attempts.
        """
        uuid = guest.uuid
        attempts = []

        def attempt():
            attempts.append(1)
            self._resume_once(guest, uuid, fresh=len(attempts) > 1)

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
    def create_snapshot(self, disk, layer_name, rec, quiesce=None):
        """Freeze the disk's live layer and put a new one on top of it.

        :param quiesce: ``required``, ``preferred`` or ``off`` (None):
            freeze the guest's filesystems around the pause through
            libvirt and the domain's guest agent (:meth:`_quiesced`).  The
            result then says what the snapshot got: ``consistency``
            (``application`` or ``crash``) and ``consistency_reason``.
        :returns: ``{"snapshot", "disk", "size_bytes", "online"}``.
        :raises PathNotAllowed, ImageInUse, ImageError, lvguest.LibvirtError,
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
        :raises PathNotAllowed, ImageInUse, ImageError, lvguest.LibvirtError,
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
            if fileimage.same(active, new):
                raise exception.InvalidRequest(
                    'The new layer must differ from the live one')
            group.append((disk.get('target'), active, new))
        if len(set(t for t, _, _ in group)) != len(group) or \
                len(set(a for _, a, _ in group)) != len(group):
            raise exception.InvalidRequest('A disk is named twice')
        guest = self._domain(disks[0])
        for _, _, new in group:
            if not os.path.exists(new):
                self._ensure_space(new, fileimage.LAYER_BYTES, 'a new layer')
        online = guest.is_active()
        outcome = {'consistency': 'crash',
                   'consistency_reason': 'quiesce off'}
        if online:
            self._create_online(guest, group, rec,
                                quiesce=(quiesce or 'off', outcome))
        else:
            outcome['consistency_reason'] = (
                'offline: the server was not running; the disks are as '
                'the guest left them')
            self._create_offline(guest, group, rec)
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

    def _create_offline(self, guest, group, rec):
        def current(target, active, new):
            path = guest.config_source(target)
            if fileimage.same(path, new) and \
                    fileimage.same(images.backing_file(new), active):
                return True
            return False if fileimage.same(path, active) else None

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
            self._set_config_sources(guest, {t: n for t, _, n in group})
        LOG.info('Created offline snapshot of %(n)d disk(s), new live '
                 'layers %(new)s', {'n': len(group),
                                    'new': [n for _, _, n in group]})

    def _snapshot_xml(self, guest, news):
        """A disk-only snapshot of each target of ``news`` onto its
        existing file (``{target: path}``); every other disk is left
        out.
        """
        root = ET.Element('domainsnapshot')
        disks = ET.SubElement(root, 'disks')
        for elem in lvguest.disk_elements(guest.xml()):
            dev = elem.find('target').get('dev')
            if dev in news:
                d = ET.SubElement(disks, 'disk', name=dev,
                                  snapshot='external', type='file')
                ET.SubElement(d, 'driver', type='qcow2')
                ET.SubElement(d, 'source', file=news[dev])
            else:
                ET.SubElement(disks, 'disk', name=dev, snapshot='no')
        return ET.tostring(root, encoding='unicode')

    def _switched(self, guest, group):
        """For each disk of ``group``: True if its new layer is live."""
        switched = []
        for target, _, new in group:
            chain = guest.live_chain(target)
            switched.append(bool(chain) and fileimage.same(chain[0], new))
        return switched

    def _create_online(self, guest, group, rec, quiesce=None):
        """Switch every disk of ``group`` in one ``snapshotCreateXML``.

        :param quiesce: ``(mode, outcome)`` for :meth:`_quiesced`, around
            the paused section only.
        """
        mode, outcome = quiesce or ('off', {})

        def current(target, active, new):
            chain = guest.live_chain(target)
            if chain and fileimage.same(chain[0], new) and len(chain) > 1 \
                    and fileimage.same(chain[1], active):
                return True
            if chain and fileimage.same(chain[0], active):
                return False
            return None

        news = {t: n for t, _, n in group}
        if self._done_or_refuse(group, current, 'the running domain'):
            LOG.info('Snapshot onto %(new)s already done',
                     {'new': list(news.values())})
            outcome['consistency_reason'] = (
                'the switch was found done when the operation was run '
                'again; whether the guest was frozen is not known')
            self._set_config_sources(guest, news)
            return
        for target, active, _ in group:
            self._refuse_if_busy(guest, target, active)
        for _, active, new in group:
            with rec.step('prepare', image=new):
                images.create_overlay(new, active, exist_ok=True)
                images.flush(new)
                images.flush(active)
        snap_xml = self._snapshot_xml(guest, news)
        flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                 | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
        detail = self._switch_detail(group)
        try:
            # The freeze after every overlay is ready, right before the
            # pause; the thaw after the resume, in a finally.
            with self._quiesced(guest, mode, rec, outcome):
                if self.snapshot_pause == 'suspend':
                    self._snapshot_suspended(guest, snap_xml, flags, rec,
                                             detail)
                else:
                    self._snapshot_transaction(guest, snap_xml, flags, rec,
                                               detail)
        except BaseException as exc:
            switched = self._switched(guest, group)
            if not all(switched) or isinstance(exc, exception.ResumeFailed):
                for (_, _, new), done in zip(group, switched):
                    if not done:
                        self._drop_file(new)
                raise
            LOG.warning('The switch to %(new)s happened although %(exc)s; '
                        'keeping it', {'new': list(news.values()),
                                       'exc': exc})
        # libvirt updates the persistent definition as well; make sure.
        self._set_config_sources(guest, news)
        LOG.info('Created online snapshot of %(n)d disk(s), new live '
                 'layers %(new)s, paused %(ms)s ms',
                 {'n': len(group), 'new': list(news.values()),
                  'ms': rec.pause_ms})

    # -- quiesce -------------------------------------------------------------
    def can_quiesce(self, disk):
        """Always: :meth:`_quiesced` freezes through libvirt
        (``fsFreeze``, the domain's guest agent) or says why not (no
        guest agent channel, an agent that does not answer).
        """
        return True

    def thaw_guest(self, disk):
        """Thaw the guest of ``disk`` (``fsThaw``) if it is frozen; for
        recovery and the thaw retries.

        :returns: True if filesystems were frozen and are thawed now
            (False too for a domain that is gone, shut off or has no
            guest agent channel: nothing of it is frozen).
        :raises lvguest.LibvirtError: the guest agent could not be reached.
        """
        try:
            guest = self._domain(disk)
        except exception.InvalidRequest as exc:
            LOG.warning('Nothing to thaw: %(exc)s', {'exc': exc})
            return False
        if not guest.is_active() or guest.guest_agent_state() is None:
            return False
        return self._fs_thaw(guest) > 0

    def _agent_timeout(self, guest, default=False):
        """Bound libvirt's wait for the guest agent's answers to
        ``quiesce_timeout`` (libvirt waits forever by default, and keeps
        a bound for the domain while it runs); with ``default``, give the
        domain back libvirt's default (libvirt has no getter for what was
        set before), so other users of the guest agent (nova's password
        set, ``guest-sync``) do not keep livesnap's bound.
        """
        guest.set_agent_timeout(
            lvguest.AGENT_RESPONSE_TIMEOUT_DEFAULT if default
            else max(1, int(math.ceil(self.quiesce_timeout))))

    def _fs_thaw(self, guest):
        """``fsThaw``: :returns: the number of filesystems thawed."""
        self._agent_timeout(guest)
        thawed = guest.fs_thaw()
        self._agent_timeout(guest, default=True)
        return thawed

    @contextlib.contextmanager
    def _quiesced(self, guest, mode, rec, outcome):
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
        state = guest.guest_agent_state()
        if state is None:
            failed = ('the domain has no guest agent channel (%s)'
                      % lvguest.GUEST_AGENT_CHANNEL)
        elif state == 'disconnected':
            # No agent runs in the guest: nothing is sent, nothing frozen.
            failed = ('the guest agent is not connected (no qemu-ga '
                      'answers on %s)' % lvguest.GUEST_AGENT_CHANNEL)
        else:
            started = time.monotonic()
            try:
                with rec.step('freeze', domain=guest.uuid,
                              timeout=self.quiesce_timeout) as entry:
                    self._agent_timeout(guest)
                    count = guest.fs_freeze()
                    entry.setdefault('detail', {})['filesystems'] = count
                    took = time.monotonic() - started
                    if took > self.quiesce_timeout:
                        raise lvguest.LibvirtError(
                            'The guest agent of %s froze the filesystems '
                            'after %.1f s, past the quiesce timeout of '
                            '%.1f s' % (guest.name, took,
                                        self.quiesce_timeout))
            except exception.AgentError as exc:
                # It may have frozen after all, late: never leave it so.
                self._thaw(guest, rec)
                failed = ('the guest agent did not freeze the filesystems: '
                          '%s' % exc)
        if failed is not None:
            if mode == 'required':
                raise exception.QuiesceFailed(
                    'Quiesce required but %s' % failed)
            LOG.warning('Snapshot of %(dom)s goes on crash-consistent: '
                        '%(why)s', {'dom': guest.name, 'why': failed})
            outcome['consistency_reason'] = failed
            yield
            return
        outcome.update(consistency='application',
                       consistency_reason='filesystems frozen by the guest '
                                          'agent during the pause')
        try:
            yield
        finally:
            self._thaw(guest, rec)

    def _thaw(self, guest, rec):
        """Step ``thaw`` (``fsThaw``).  Logs, never raises: the journal
        keeps the guest marked frozen and the agent retries (and its
        recovery thaws).
        """
        try:
            with rec.step('thaw', domain=guest.uuid) as entry:
                entry.setdefault('detail', {})['filesystems'] = \
                    self._fs_thaw(guest)
        except exception.AgentError as exc:
            LOG.error('Could not thaw the guest of %(dom)s: %(exc)s',
                      {'dom': guest.name, 'exc': exc})

    def _snapshot_transaction(self, guest, snap_xml, flags, rec, detail):
        """One ``snapshotCreateXML``: libvirt adds the new layer's nodes
        and switches the disk in a QEMU ``transaction``, which drains the
        disk's I/O; the vCPUs are not stopped.  The pause recorded is the
        agent's view of the call (no QEMU timestamp reaches libvirt's
        clients), an upper bound of the drained section.
        """
        with rec.step('pause', by='libvirt (QEMU transaction drains the '
                                  'disk; vCPUs run)',
                      measured='agent, around snapshotCreateXML'):
            rec.mark_paused()
        try:
            with rec.step('snapshot', **detail):
                guest.snapshot(snap_xml, flags,
                               detail.get('active', detail.get('actives')))
        finally:
            with rec.step('resume', by='libvirt (end of the transaction)'):
                rec.mark_resumed()

    def _snapshot_suspended(self, guest, snap_xml, flags, rec, detail):
        """``suspend``, ``snapshotCreateXML``, ``resume`` (in a
        ``finally``, with retries).  ``pause_ms`` is QEMU's STOP to RESUME
        window (its own timestamps, see pause.PauseClock) when the events
        came, else the agent's view (``suspend`` sent to ``resume``
        returned).
        """
        was_running = guest.state() == libvirt.VIR_DOMAIN_RUNNING
        watchdog = None
        try:
            with rec.step('pause', was_running=was_running, by='suspend'):
                self._clock.mark(guest.uuid)
                rec.mark_paused()
                if was_running:
                    watchdog = self._suspend(guest)
            with rec.step('snapshot', **detail):
                guest.snapshot(snap_xml, flags,
                               detail.get('active', detail.get('actives')))
        finally:
            rescued = self._finish_suspend(guest, rec, was_running, watchdog)
        if rescued:
            # The caller keeps the switch if it happened (as the QEMU
            # driver does past its deadline).
            raise exception.PauseDeadlineExceeded(
                'Domain %s stayed suspended past the pause deadline '
                '(%.1f ms); the watchdog resumed it'
                % (guest.name, self.pause_deadline * 1000.0))

    def _suspend(self, guest):
        """``suspend`` ``guest`` under a watchdog armed first.

        :returns: the armed pause.PauseWatchdog.
        """
        watchdog = pause.PauseWatchdog(self._resume_once, guest,
                                       self.pause_deadline)
        watchdog.arm()
        try:
            guest.suspend()
        except exception.AgentError:
            # The caller's finally resumes it if the suspend happened.
            watchdog.disarm()
            raise
        return watchdog

    def _finish_suspend(self, guest, rec, was_running, watchdog=None):
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
                self._resume(guest)
                qemu_ms = self._clock.window_ms(guest.uuid)
            rec.mark_resumed(qemu_pause_ms=qemu_ms,
                             qemu_paused_at=self._clock.stopped_at(
                                 guest.uuid),
                             resumed_at=watchdog.resumed_at
                             if rescued else None)
        return rescued

    # -- merge ----------------------------------------------------------------
    def merge(self, disk, snapshot, parent, child, rec, progress=None,
              child_is_leaf=False, cancelled=None):
        """base.Driver.merge: ``_merge``, and the size of the file that
        now holds the child.
        """
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
        snap, parent_path, child_path = self._merge_operands(
            snapshot['path'], parent['path'] if parent else None,
            child['path'])
        guest = self._domain(disk)
        target = disk['target']
        child_is_live = 'target' in child or fileimage.same(child_path,
                                                            disk['path'])
        online = guest.is_active()

        def result(direction, holder, is_online):
            new_disk = dict(disk)
            if child_is_live:
                new_disk['path'] = holder['path']
                holder = new_disk
            return {'child': holder, 'disk': new_disk,
                    'direction': direction, 'online': is_online}

        streamed = result('stream', child, online)
        committed = result('commit', image_locator(snapshot['path']), online)

        if self._streamed_already(snap, parent_path, child_path):
            return streamed
        if not os.path.lexists(child_path) \
                and fileimage.same(images.backing_file(snap), parent_path):
            LOG.info('Commit of %(child)s into %(snap)s already done',
                     {'snap': snap, 'child': child_path})
            images.purge(child_path)
            if child_is_live:
                self._set_config_source(guest, target, snap)
            return committed

        if online:
            chain = guest.live_chain(target)
            self._refuse_if_busy(guest, target, disk['path'], ours=(
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL,
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT,
                libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT))
            job = guest.block_job(target)
            in_chain = [c for c in chain if fileimage.same(c, child_path)]
            if job.get('type') == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL:
                self._pull(guest, target, snap, parent_path, child_path, rec,
                           progress, cancelled)
                return streamed
            # A commit that ended before an agent restart: the child is
            # out of the chain, the snapshot still in it (the live layer
            # if the child was; an intermediate child's file may still
            # be there): _commit finishes it (reparent, delete).
            if job.get('type') in (
                    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT,
                    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT) \
                    or (not in_chain and chain
                        and fileimage.same(chain[0], snap)
                        and child_is_live) \
                    or (not in_chain and not child_is_live
                        and any(fileimage.same(c, snap) for c in chain)):
                self._commit(guest, target, snap, parent_path, child_path,
                             rec, progress, cancelled, child_is_live)
                return committed
            if in_chain:
                if fileimage.same(chain[0], child_path):
                    if child_is_leaf and self._cheaper_to_commit(
                            snap, child_path):
                        self._commit(guest, target, snap, parent_path,
                                     child_path, rec, progress, cancelled,
                                     True)
                        return committed
                    self._pull(guest, target, snap, parent_path, child_path,
                               rec, progress, cancelled)
                    return streamed
                self._commit(guest, target, snap, parent_path, child_path,
                             rec, progress, cancelled, False)
                return committed
            if child_is_live:
                raise exception.InvalidRequest(
                    '%s is not the live layer of %s' % (child_path, target))
        streamed['online'] = committed['online'] = False
        out = streamed
        if self._merge_files(snap, parent_path, child_path, rec,
                             child_is_leaf, direction='stream') == 'commit':
            out = committed
        # Also when the live layer stays: a backing chain the definition
        # still lists would name the file just deleted, and the domain
        # would not start again.
        self._set_config_source(guest, target, out['disk']['path'])
        return out

    def _wait_job(self, guest, target, progress, cancelled, ready=False):
        """Poll ``blockJobInfo`` until the job of ``target`` is gone (or,
        with ``ready``, has copied everything: an active commit waiting for
        its pivot).

        :raises Cancelled: ``cancelled()`` turned true (the job is
            aborted; the chain is as it was).
        :raises LibvirtError: the job overran ``job_timeout``.
        """
        start = time.monotonic()
        while True:
            job = guest.block_job(target)
            if not job:
                return job
            end = job.get('end') or 0
            cur = job.get('cur') or 0
            if progress is not None:
                try:
                    progress(100.0 * cur / end if end else 0.0)
                except Exception:  # noqa - a reporting bug must not abort
                    LOG.exception('Progress callback failed')
            if ready and end and cur == end and guest.mirror_ready(target):
                return job
            if cancelled is not None and cancelled():
                guest.abort_job(target)
                raise exception.Cancelled(
                    'The merge was cancelled by an administrator while it '
                    'copied; the images are as they were')
            if (self.job_timeout is not None
                    and time.monotonic() - start > self.job_timeout):
                guest.abort_job(target)
                raise lvguest.LibvirtError('The block job of %s timed out'
                                           % target)
            time.sleep(self.job_poll_interval)

    def _flush(self, guest, rec):
        """Make QEMU write the image metadata it caches (the merged
        layer's new cluster mappings) before the layer it no longer needs
        is deleted: libvirt has no flush call, but QEMU's ``stop`` flushes
        every image, so the domain is suspended and resumed (in a
        ``finally``, with retries).  Without it a host crash could leave
        the survivor's mappings unwritten and their data's only other copy
        deleted.  Skipped for a domain that is not running.
        """
        if guest.state() != libvirt.VIR_DOMAIN_RUNNING:
            return
        watchdog = None
        try:
            with rec.step('pause', was_running=True, by='suspend',
                          why='QEMU flushes its image metadata'):
                self._clock.mark(guest.uuid)
                rec.mark_paused()
                watchdog = self._suspend(guest)
        finally:
            # A watchdog's resume is no failure here: the flush is done
            # once suspend has returned.
            self._finish_suspend(guest, rec, True, watchdog)

    @staticmethod
    def _check_merged(guest, target, gone, survivor, parent, job, missed):
        """After a block job: ``gone`` has left the live chain of
        ``target`` (else LibvirtError ``missed``) and ``survivor`` is
        built on ``parent`` (else ImageError).
        """
        if any(fileimage.same(c, gone)
               for c in guest.live_chain(target)):
            raise lvguest.LibvirtError(missed)
        backing = images.backing_file(survivor)
        if not fileimage.same(backing, parent):
            raise exception.ImageError(
                '%s has backing %s after the %s, expected %s'
                % (survivor, backing, job, parent))

    def _delete_after_merge(self, rec, drop, guest=None):
        if guest is not None:
            self._flush(guest, rec)
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

    def _pull(self, guest, target, snap, parent, child, rec, progress,
              cancelled):
        """Stream ``snap`` into the live layer ``child`` (``blockPull``, or
        ``blockRebase`` to ``parent``); then delete ``snap``'s file.
        """
        job = guest.block_job(target)
        if not job:
            chain = guest.live_chain(target)
            if any(fileimage.same(c, snap) for c in chain):
                self._ensure_space(child, images.actual_size(snap),
                                   'the merge')
                with rec.step('prepare', image=child, direction='stream'):
                    images.flush(snap)
                guest.pull(target, _as_in(chain, parent), self.merge_speed,
                           '%s into %s' % (snap, child))
        with rec.step('merge', job='pull', image=child, onto=parent,
                      direction='stream'):
            self._wait_job(guest, target, progress, cancelled)
        with rec.step('reparent', image=child, parent=parent):
            self._check_merged(
                guest, target, snap, child, parent, 'stream',
                'The stream of %s into %s ended without merging it'
                % (snap, child))
        if progress is not None:
            progress(100.0)
        self._delete_after_merge(rec, snap, guest)
        LOG.info('Streamed %(snap)s into %(child)s online',
                 {'snap': snap, 'child': child})

    def _commit(self, guest, target, snap, parent, child, rec, progress,
                cancelled, active):
        """Commit ``child`` into ``snap`` with ``blockCommit``; for the
        live layer (``active``) wait until the job is ready and pivot the
        disk onto ``snap`` (``blockJobAbort`` with ``PIVOT``: QEMU drains
        the disk's I/O for the switch).  Then delete ``child``'s file.
        """
        job = guest.block_job(target)
        chain = guest.live_chain(target)
        done = not any(fileimage.same(c, child) for c in chain)
        if not job and not done:
            self._ensure_space(snap, images.actual_size(child), 'the merge')
            with rec.step('prepare', image=snap, direction='commit'):
                images.flush(child)
            guest.commit(target, _as_in(chain, snap), _as_in(chain, child),
                         self.merge_speed, active,
                         '%s into %s' % (child, snap))
            job = guest.block_job(target)
        if job:
            with rec.step('merge', job='commit', image=snap, source=child,
                          direction='commit'):
                self._wait_job(guest, target, progress, cancelled,
                               ready=active)
            if active:
                self._pivot(guest, target, rec)
        with rec.step('reparent', image=snap, parent=parent):
            self._check_merged(
                guest, target, child, snap, parent, 'commit',
                'The commit of %s into %s ended without dropping it'
                % (child, snap))
        if active:
            self._set_config_source(guest, target, snap)
        if progress is not None:
            progress(100.0)
        self._delete_after_merge(rec, child, guest)
        LOG.info('Committed %(child)s into %(snap)s online',
                 {'snap': snap, 'child': child})

    def _pivot(self, guest, target, rec):
        """Switch the disk onto the commit's base; the I/O is drained for
        the switch (measured by the agent around the call).
        """
        try:
            with rec.step('pause', was_running=True,
                          drained_by='qemu (job-complete)',
                          measured='agent, around blockJobAbort(PIVOT)'):
                rec.mark_paused()
            with rec.step('snapshot', pivot=target):
                guest.pivot(target, self.job_poll_interval)
        finally:
            with rec.step('resume', by='qemu (pivot)'):
                rec.mark_resumed()

    # -- revert ---------------------------------------------------------------
    def revert(self, disk, snapshot, layer_name, rec):
        """Put a new live layer on ``snapshot`` and point the domain's
        definition at it.

        :raises ServerRunning: the domain runs.
        """
        snap = self._confine(snapshot['path'])
        new_path = self.layer_locator(disk, layer_name)['path']
        new = self._confine(new_path)
        guest = self._domain(disk)
        if guest.is_active():
            raise exception.ServerRunning(
                'The server is running; shut it off before reverting')
        self._prepare_revert(snap, new, self._confine(disk['path']), rec)
        with rec.step('snapshot', active=new):
            self._set_config_source(guest, disk['target'], new)
        return {'disk': disk_locator(disk['domain'], disk['target'],
                                     new_path),
                'online': False}

    def check(self, locator, kind='image'):
        """base.Driver.check, and the path inside the image directories
        (a disk locator also names its domain and target).
        """
        super().check(locator, kind)
        if kind == 'disk' and not (isinstance(locator.get('domain'), str)
                                   and isinstance(locator.get('target'), str)):
            raise exception.InvalidRequest(
                'A libvirt disk locator names its domain and target: %r'
                % (locator,))
