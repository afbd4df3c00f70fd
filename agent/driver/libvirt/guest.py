"""One libvirt domain behind a small class (as nova's
``nova/virt/libvirt/guest.py``): the libvirt calls the driver makes on a
domain, each turning libvirt's error into an AgentError, and what the
domain's XML says of its disks (their targets, files and backing chains).

The driver decides what to do; a :class:`Guest` only does it, one call at
a time, and holds no state besides the domain.
"""

import logging
import time
import xml.etree.ElementTree as ET

from agent import exception
from agent import images

try:
    import libvirt
except ImportError:  # pragma: no cover - the driver then refuses to start
    libvirt = None

LOG = logging.getLogger(__name__)

#: the name of the virtio-serial port qemu-ga listens on
GUEST_AGENT_CHANNEL = 'org.qemu.guest_agent.0'

#: ``VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT``: libvirt's own choice
AGENT_RESPONSE_TIMEOUT_DEFAULT = -1

#: attempts at a pivot libvirt refuses as not ready yet
PIVOT_ATTEMPTS = 50


class LibvirtError(exception.AgentError):
    """libvirt refused a call or could not be reached."""
    code = 'libvirt_error'


def wrap(what, exc):
    """The AgentError for libvirt's error ``exc`` while doing ``what``."""
    text = '%s: %s' % (what, exc)
    if images.NO_SPACE in str(exc):
        return exception.NoSpace(text)
    return LibvirtError(text)


def disk_elements(root):
    """The ``<disk>`` elements of a domain XML that have a target."""
    for disk in root.findall('./devices/disk'):
        target = disk.find('target')
        if target is None or target.get('dev') is None:
            continue
        yield disk


def source_file(elem):
    """The file a ``<disk>`` or ``<backingStore>`` element names, or
    None.
    """
    source = elem.find('source') if elem is not None else None
    if source is None:
        return None
    return source.get('file')


def chain(disk):
    """The files of ``disk``'s backing chain as libvirt knows it, live
    layer first.
    """
    files = []
    elem = disk
    while elem is not None:
        path = source_file(elem)
        if path is None:
            break
        files.append(path)
        elem = elem.find('backingStore')
    return files


def find_disk(root, target):
    """The ``<disk>`` element of ``target`` in the domain XML ``root``.

    :raises InvalidRequest: the domain has no such disk.
    """
    for disk in disk_elements(root):
        if disk.find('target').get('dev') == target:
            return disk
    raise exception.InvalidRequest('The domain has no disk %s' % target)


class Guest(object):
    """A libvirt domain (``virDomain``), as the driver calls it.

    Every method raises LibvirtError (NoSpace when libvirt says the disk
    is full) where libvirt raised ``libvirtError``.
    """

    def __init__(self, dom):
        self.dom = dom

    # -- who and how --------------------------------------------------------
    @property
    def name(self):
        return self.dom.name()

    @property
    def uuid(self):
        return self.dom.UUIDString()

    def is_active(self):
        try:
            return bool(self.dom.isActive())
        except libvirt.libvirtError as exc:
            raise wrap('Cannot get the state of %s' % self.name, exc)

    def state(self):
        """``VIR_DOMAIN_RUNNING``, ``VIR_DOMAIN_PAUSED``, ..."""
        try:
            state, _reason = self.dom.state()
        except libvirt.libvirtError as exc:
            raise wrap('Cannot get the state of %s' % self.name, exc)
        return state

    def is_persistent(self):
        try:
            return bool(self.dom.isPersistent())
        except libvirt.libvirtError as exc:
            raise wrap('Cannot read %s' % self.name, exc)

    # -- the XML ------------------------------------------------------------
    def xml(self, inactive=False):
        """The running (or, ``inactive``, the persistent) definition."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        try:
            return ET.fromstring(self.dom.XMLDesc(flags))
        except libvirt.libvirtError as exc:
            raise wrap('Cannot read the definition of %s' % self.name, exc)

    def live_chain(self, target):
        """``target``'s backing chain in the running domain, live layer
        first.
        """
        return chain(find_disk(self.xml(), target))

    def config_source(self, target):
        """The file ``target`` starts on in the persistent definition."""
        return source_file(find_disk(self.xml(inactive=True), target))

    def mirror_ready(self, target):
        """True once libvirt marks the active commit ready for a pivot."""
        mirror = find_disk(self.xml(), target).find('mirror')
        return mirror is not None and mirror.get('ready') == 'yes'

    def guest_agent_state(self):
        """The running domain's guest agent channel
        (``org.qemu.guest_agent.0``): None if it has none, else its
        ``state`` in the live XML (``connected`` while an agent in the
        guest has the port open, ``disconnected``; ``''`` when libvirt
        does not say).
        """
        for target in self.xml().findall('./devices/channel/target'):
            if target.get('name') == GUEST_AGENT_CHANNEL:
                return target.get('state') or ''
        return None

    # -- pause --------------------------------------------------------------
    def suspend(self):
        try:
            self.dom.suspend()
        except libvirt.libvirtError as exc:
            raise wrap('Cannot suspend %s' % self.name, exc)

    def resume_if_paused(self):
        """:returns: True if the domain was paused and is resumed now."""
        try:
            if self.dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                self.dom.resume()
                return True
            return False
        except libvirt.libvirtError as exc:
            raise wrap('Cannot resume domain %s' % self.uuid, exc)

    def snapshot(self, snap_xml, flags, onto):
        """``snapshotCreateXML`` (the switch onto ``onto``, for the
        error's text).
        """
        try:
            self.dom.snapshotCreateXML(snap_xml, flags)
        except libvirt.libvirtError as exc:
            raise wrap('snapshotCreateXML onto %s failed' % (onto,), exc)

    # -- the guest agent ----------------------------------------------------
    def set_agent_timeout(self, seconds):
        """Bound libvirt's wait for the guest agent's answers
        (``AGENT_RESPONSE_TIMEOUT_DEFAULT``: libvirt's default); warns
        when libvirt-python cannot.
        """
        try:
            self.dom.agentSetResponseTimeout(seconds, 0)
        except AttributeError:
            LOG.warning('libvirt-python has no agentSetResponseTimeout: '
                        'the guest agent of %(dom)s is not bounded by the '
                        'quiesce timeout', {'dom': self.name})
        except libvirt.libvirtError as exc:
            raise wrap('Cannot set the guest agent timeout of %s'
                       % self.name, exc)

    def fs_freeze(self):
        """:returns: the number of filesystems frozen."""
        try:
            return self.dom.fsFreeze()
        except libvirt.libvirtError as exc:
            raise wrap('fsFreeze of %s failed' % self.name, exc)

    def fs_thaw(self):
        """:returns: the number of filesystems thawed."""
        try:
            return self.dom.fsThaw()
        except libvirt.libvirtError as exc:
            raise wrap('fsThaw of %s failed' % self.name, exc)

    # -- block jobs ---------------------------------------------------------
    def block_job(self, target):
        """``blockJobInfo`` of ``target``: ``{}`` when no job runs."""
        try:
            return self.dom.blockJobInfo(target, 0) or {}
        except libvirt.libvirtError as exc:
            raise wrap('Cannot query the block job of %s' % target, exc)

    def abort_job(self, target):
        """Best effort: abort ``target``'s block job."""
        try:
            self.dom.blockJobAbort(target, 0)
        except libvirt.libvirtError as exc:
            LOG.warning('Could not abort the block job of %(target)s: '
                        '%(exc)s', {'target': target, 'exc': exc})

    def pull(self, target, base, bandwidth, what):
        """Stream into ``target``'s live layer: ``blockPull`` of the
        whole chain (``base`` None) or ``blockRebase`` down to ``base``;
        ``bandwidth`` bytes per second, 0: no limit.
        """
        try:
            if base is None:
                flags = (libvirt.VIR_DOMAIN_BLOCK_PULL_BANDWIDTH_BYTES
                         if bandwidth else 0)
                self.dom.blockPull(target, bandwidth, flags)
            else:
                flags = (libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES
                         if bandwidth else 0)
                self.dom.blockRebase(target, base, bandwidth, flags)
        except libvirt.libvirtError as exc:
            raise wrap('Cannot stream %s' % what, exc)

    def commit(self, target, base, top, bandwidth, active, what):
        """``blockCommit`` of ``top`` into ``base`` (``active``: the live
        layer, then a pivot ends the job).
        """
        flags = 0
        if active:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
        if bandwidth:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES
        try:
            self.dom.blockCommit(target, base, top, bandwidth, flags)
        except libvirt.libvirtError as exc:
            raise wrap('Cannot commit %s' % what, exc)

    def pivot(self, target, poll_interval):
        """``blockJobAbort`` with ``PIVOT``, tried again while libvirt
        says the job is not ready yet (cur == end before QEMU's READY).
        """
        for attempt in range(PIVOT_ATTEMPTS):
            try:
                self.dom.blockJobAbort(
                    target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                return
            except libvirt.libvirtError as exc:
                if (exc.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE
                        or attempt == PIVOT_ATTEMPTS - 1):
                    raise wrap('Cannot pivot %s' % target, exc)
                time.sleep(poll_interval)
