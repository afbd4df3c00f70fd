"""What the conductor knows of each driver's locators, by driver name.

The conductor stores the locators the agents' drivers make, compares them
whole and decides policy only (``agent.driver.base``).  The few places
where it must make a locator before any agent has answered, or read
something out of one, ask this module, by the driver's name (the
``driver`` tag of a locator, ``servers.driver`` of a server), so that a
new backend is a new class here beside its agent driver and no edit in
the conductor:

* ``registered_disk`` and ``server_columns``: a server registered by its
  disks' paths (``POST /v1/servers`` without a domain);
* ``cloned_disk``: the disk locator of a clone, from the image locator
  the agent made;
* ``may_run``: whether the agent is to be asked if a server runs (a
  revert needs it shut off);
* ``has_guest_agent``: whether a disk's VM has a guest agent channel (the
  default quiesce);
* ``file_kind``: what a file the audit found in the image directories
  is, by its name;
* ``WORK_SUFFIX``: what the drivers' image work appends to a file's
  name.

The agent's side of the same knowledge (where a new layer goes, what a
locator may name, what a chain really is) is the driver's:
``Driver.layer_locator``, ``Driver.check``, ``Driver.inspect``.
"""

import re

#: the driver of a server registered without one (``servers.driver``'s
#: default)
DEFAULT_DRIVER = 'qemu'

#: what the drivers' image work appends to a layer's file name while it
#: works on it (``agent.images``): a purge's ``.deleted``, a copy's
#: ``.tmp``
WORK_SUFFIX = re.compile(r'(\.deleted|\.tmp(-[0-9]+)?)$')


class Locators(object):
    """One driver's locator rules, as the conductor needs them.  The
    defaults suit a driver whose locators the agent alone makes.
    """

    #: the driver's name (the ``driver`` tag of its locators)
    name = None
    #: what the names of the driver's layer files end with ('' if nothing)
    layer_suffix = ''

    def server_columns(self, server):
        """The columns of a ``servers`` row that a registration by disk
        paths fills besides the common ones.
        """
        return {}

    def registered_disk(self, server, disk):
        """The disk locator of ``disk`` (``{"name", "path"}``) of a server
        registered by its disks' paths (``server``: the request's server
        object).

        :raises ValueError: the driver's servers are not registered so.
        """
        raise ValueError('Servers of the %s driver are not registered by '
                         'disk paths' % self.name)

    def cloned_disk(self, image, siblings):
        """The disk locator of a new disk made from the image locator
        ``image`` (a clone's), for a server whose other disks have the
        locators ``siblings``: the image's, until the disk is attached.
        """
        return dict(image)

    def may_run(self, disks):
        """False if a server whose disks have the locators ``disks``
        cannot be running as far as livesnap knows (its agent is then not
        asked).
        """
        return True

    def has_guest_agent(self, disk):
        """True if the VM of the disk locator ``disk`` has a guest agent
        channel livesnap can quiesce it through.
        """
        return False


class QemuLocators(Locators):
    """``agent.driver.qemu``: a disk is its live layer's file and the QMP
    socket (and guest agent channel) of the QEMU that runs it, both given
    at registration.
    """

    name = 'qemu'
    layer_suffix = '.qcow2'

    def server_columns(self, server):
        """The server's QMP socket (``servers.qmp_socket``, a copy of its
        disks' own, for the admins' view of the server).
        """
        return {'qmp_socket': server.get('qmp_socket')}

    def registered_disk(self, server, disk):
        locator = {'driver': self.name,
                   'qmp_socket': server.get('qmp_socket'),
                   'path': disk['path']}
        if server.get('qga_socket'):
            # the guest agent's channel, for quiesce
            locator['qga_socket'] = server['qga_socket']
        return locator

    def cloned_disk(self, image, siblings):
        """The image's locator with the server's QMP socket, as
        ``registered_disk`` gives its disks (None: a server registered
        without one).
        """
        sockets = [d.get('qmp_socket') for d in siblings
                   if (d or {}).get('driver') == self.name
                   and d.get('qmp_socket')]
        return dict(image, qmp_socket=sockets[0] if sockets else None)

    def may_run(self, disks):
        """A server registered without a QMP socket never runs as far as
        livesnap knows.
        """
        return any((d or {}).get('qmp_socket') for d in disks)

    def has_guest_agent(self, disk):
        return bool((disk or {}).get('qga_socket'))


class LibvirtLocators(Locators):
    """``agent.driver.libvirt``: the agent describes a domain's disks at
    registration (``Driver.list_vms``); its layers are qcow2 files.
    """

    name = 'libvirt'
    layer_suffix = '.qcow2'

    def has_guest_agent(self, disk):
        """True: whether the domain has the guest agent's channel is in
        its definition, which may change at any time, so the agent's
        driver reads it when it freezes (``quiesce`` then defaults to
        ``preferred``, and a snapshot of a domain without the channel
        says so in its ``consistency_reason``; ``required`` fails there
        with ``quiesce_failed``).
        """
        return bool(disk)


class FakeLocators(Locators):
    """``agent.driver.fake``: a disk locator names its VM (``vm``), None
    for a disk no VM uses.
    """

    name = 'fake'

    def cloned_disk(self, image, siblings):
        return dict(image, vm=None)


_DRIVERS = {c.name: c() for c in (QemuLocators, LibvirtLocators,
                                   FakeLocators)}


def for_driver(name):
    """The locator rules of driver ``name`` (the defaults of ``Locators``
    for a driver this module does not know).
    """
    return _DRIVERS.get(name) or Locators()


def _driver_of(locator):
    return for_driver((locator or {}).get('driver'))


def server_columns(server):
    """See ``Locators.server_columns``; ``server`` is the request's server
    object (its ``driver``, else ``DEFAULT_DRIVER``).
    """
    return for_driver(server.get('driver') or DEFAULT_DRIVER).server_columns(
        server)


def registered_disk(server, disk):
    """See ``Locators.registered_disk``; the driver as in
    ``server_columns``.
    """
    return for_driver(server.get('driver') or DEFAULT_DRIVER).\
        registered_disk(server, disk)


def cloned_disk(image, siblings):
    """See ``Locators.cloned_disk``; by the image's driver."""
    return _driver_of(image).cloned_disk(image, siblings)


def may_run(driver, disks):
    """See ``Locators.may_run``; ``driver`` is the server's."""
    return for_driver(driver).may_run(disks)


def has_guest_agent(disk):
    """See ``Locators.has_guest_agent``; by the disk locator's driver."""
    return _driver_of(disk).has_guest_agent(disk)


def file_kind(path):
    """What kind of file ``path`` (one the audit found in a host's image
    directories) is, by its name: a leftover of image work, a layer of
    one of the drivers, or a file.
    """
    if path.endswith('.deleted'):
        return 'the file of a deleted image that was never unlinked'
    if WORK_SUFFIX.search(path):
        return 'a temporary file of an interrupted image creation'
    if any(d.layer_suffix and path.endswith(d.layer_suffix)
           for d in _DRIVERS.values()):
        return 'an image'
    return 'a file'
