"""What a hypervisor backend must do for the agent: the driver interface.

The agent's task runner, its recovery and the conductor know nothing of
qcow2 files, QMP sockets or libvirt domains: they hold *locators*, small
JSON objects a driver makes and reads, tagged with the driver's name::

    disk locator       {"driver": "qemu", "qmp_socket": "/run/vm1.qmp",
                        "path": "/var/lib/livesnap/images/vm1-d1.qcow2"}
                       {"driver": "libvirt", "domain": "<uuid>",
                        "target": "vda", "path": "/var/lib/…/x.qcow2"}
    image locator      {"driver": "qemu", "path": "/var/lib/…/x.qcow2"}

A disk locator names a disk as it runs now (its live layer); an image
locator names one layer of its chain (a snapshot).  The conductor stores
them as it gets them, compares them for equality, and never looks inside
(the ``driver`` key aside).  Every method takes and returns locators, so
a task re-sent after a crash reaches the same objects.

Every step that changes the disk is recorded on the ``rec`` argument
(``agent.steps.StepRecorder``) under the patent's names: ``prepare``,
``pause``, ``snapshot`` (the graph change), ``merge``, ``reparent``,
``delete``, ``resume``.  Every method is idempotent: run again after a
crash at any point, it finishes what was begun and returns the same
result.  A driver that pauses a VM resumes it in a ``finally`` with
retries; a VM it could not resume is left marked on ``rec`` (``paused``)
so the journal keeps it for ``resume`` at the next start.

Drivers are found by name through the ``livesnap.agent.drivers`` entry
point group (``[agent] driver``); see ``agent.driver.load``.
"""

import abc

from agent import exception


class Driver(metaclass=abc.ABCMeta):
    """One hypervisor backend on one host.

    :param image_dirs: directories whose files the driver may touch;
        anything else is refused with PathNotAllowed before any I/O.
    """

    #: The entry point name, and the ``driver`` tag of every locator made.
    name = None

    def __init__(self, image_dirs, **options):
        self.image_dirs = list(image_dirs)

    @classmethod
    def conf_options(cls, conf):
        """The constructor's keyword arguments as the configuration
        ``conf`` sets them: the one way a driver gets its settings (the
        loader, ``agent.driver.load``, passes them; a driver never reads
        the configuration itself).  None here.
        """
        return {}

    # -- locators -----------------------------------------------------------
    def check(self, locator, kind='image'):
        """Refuse, before any I/O, a locator this driver did not make or
        that names something it may not touch (``kind`` is ``disk`` or
        ``image``).  Runs on every locator of a task before the work
        starts.

        :raises InvalidRequest: not a dict tagged with this driver's name.
        :raises PathNotAllowed: names something outside ``image_dirs``.
        """
        if not isinstance(locator, dict) or \
                locator.get('driver') != self.name:
            raise exception.InvalidRequest(
                'Not a %s locator of the %s driver: %r'
                % (kind, self.name, locator))

    # -- the host ---------------------------------------------------------
    def init_host(self, host):
        """Called once when the agent starts, before the journal replay."""

    def host_info(self):
        """What the agent reports in its heartbeat about this backend
        (``{"driver": name, "image_dirs": [...]}`` at least).
        """
        return {'driver': self.name, 'image_dirs': self.image_dirs}

    @abc.abstractmethod
    def list_vms(self):
        """The VMs this host runs that the driver can see, registered or
        not: a list of ``{"name", "uuid", "running", "disks": [{"name",
        "locator"}]}``.
        """

    # -- the disk's state -------------------------------------------------
    @abc.abstractmethod
    def is_online(self, disk):
        """True if a running VM uses the disk (snapshots are then taken
        live, with a pause), False if it is shut off (image work only).
        """

    @abc.abstractmethod
    def resume(self, disk):
        """Resume the VM of ``disk`` if it is paused (the journal replay
        after a crash inside a pause).  :returns: True if it was resumed.
        """

    # -- the patent's methods ---------------------------------------------
    @abc.abstractmethod
    def layer_locator(self, disk, layer_name):
        """Where a new layer named ``layer_name`` (ids only, chosen by the
        conductor, unique) goes for ``disk``: an image locator.  Pure: the
        same arguments always give the same locator.
        """

    # -- quiesce ------------------------------------------------------------
    def can_quiesce(self, disk):
        """True if this driver takes ``quiesce`` for ``disk``: it freezes
        the guest's filesystems around the pause itself (steps ``freeze``
        and ``thaw``) or says in its result why it could not, and thaws a
        guest left frozen with :meth:`thaw_guest`.  False (this default):
        the caller makes the snapshot crash-consistent, or refuses a
        ``required`` quiesce, without asking the driver.
        """
        return False

    def thaw_guest(self, disk):
        """Thaw the guest of ``disk`` if its filesystems are frozen (a
        thaw that failed, or an agent that died between freeze and thaw).
        This default has nothing to thaw.

        :returns: True if it was frozen and is thawed now.
        :raises AgentError: the guest could not be reached.
        """
        return False

    # -- the patent's methods (continued) -----------------------------------
    @abc.abstractmethod
    def create_snapshot(self, disk, layer_name, rec, quiesce=None):
        """Turn the disk's live layer into a snapshot and put a new layer
        on top of it as the live one (pause, switch, resume when online).

        :param quiesce: ``required``, ``preferred`` or ``off``; given only
            when :meth:`can_quiesce` says so (None: ``off``).  Frozen
            around the pause, thawed in a ``finally``; ``required`` fails
            with QuiesceFailed before the pause if the guest cannot be
            frozen.
        :returns: ``{"snapshot": image locator of the frozen layer,
            "disk": the disk's new locator, "size_bytes": int,
            "online": bool}``, with ``consistency`` (``application`` or
            ``crash``) and ``consistency_reason`` when ``quiesce`` was
            given.
        """

    def create_snapshots(self, disks, layer_names, rec, quiesce=None):
        """Snapshot several disks of one VM so they are consistent with
        one another: every new layer is prepared first, then one pause
        switches all of them (all or none), then the VM resumes.  Disk
        ``i`` gets the new layer ``layer_names[i]``.  Idempotent like
        ``create_snapshot``.  This default refuses: a driver that cannot
        switch several disks atomically must not pretend to.

        :param quiesce: as for ``create_snapshot``: one freeze before the
            group's single pause, one thaw after it.
        :returns: ``{"snapshots": [one create_snapshot result per disk, in
            the order of disks], "online": bool}``; with ``quiesce``, each
            result has ``consistency`` and ``consistency_reason`` (the
            same for every disk).
        :raises InvalidRequest: the driver does not support it, or the
            disks are not of one VM.
        """
        raise exception.InvalidRequest(
            'The %s driver cannot snapshot several disks in one pause'
            % self.name)

    @abc.abstractmethod
    def delete_image(self, image, rec):
        """Delete a layer nothing is built on (no children): an image
        locator, or a disk locator for a disk's old live layer (what a
        revert discards).  Refuses an image a process holds open
        (ImageInUse); one already gone is no error.  :returns: ``{}``.
        """

    @abc.abstractmethod
    def merge(self, disk, snapshot, parent, child, rec, progress=None,
              child_is_leaf=False, cancelled=None):
        """Merge the layer ``snapshot`` with its only ``child`` (an image
        locator, or the disk locator when the child is the live layer) so
        that one layer shows what the child showed, on top of ``parent``
        (None: it stands alone), and delete the other.  Costs the smaller
        side when ``child_is_leaf``.

        :param progress: optional callable(percent).
        :param cancelled: optional callable; True stops a copy in progress
            (Cancelled), leaving the chain as it was.
        :returns: ``{"child": locator of the layer that now holds the
            child (image locator, or the disk's new locator when the child
            was live), "disk": the disk's locator after the merge,
            "direction": "stream" or "commit", "online": bool,
            "child_size_bytes": int, the size of the layer that now
            holds the child}``.
        """

    @abc.abstractmethod
    def revert(self, disk, snapshot, layer_name, rec):
        """Put a new live layer on ``snapshot`` (the VM must be shut off:
        ServerRunning otherwise); the old live layer is left in place for
        the caller to delete (``delete_image`` with the old disk locator;
        if that fails, the caller deletes the new layer,
        ``layer_locator(disk, layer_name)``, and the disk stays as it
        was).  :returns: ``{"disk": new disk locator, "online": False}``.
        """

    # -- new disks from a snapshot ----------------------------------------
    def clone(self, snapshot, layer_name, mode, rec, progress=None):
        """Make a new image from the layer ``snapshot`` (an image
        locator), named ``layer_name`` and placed beside it
        (``layer_locator(snapshot, layer_name)``): ``flat`` is a full copy
        of what the snapshot shows with no backing (step ``copy``, with
        ``progress(percent)``), ``linked`` a new empty layer on the
        snapshot (step ``prepare``), which then needs the snapshot's
        layer for as long as it exists.  Idempotent.

        :returns: ``{"image": image locator of the new layer,
            "backing": the snapshot's locator or None, "size_bytes": int}``.
        :raises NotSupported: this driver cannot (the default).
        :raises InvalidRequest, PathNotAllowed, ImageError, NoSpace:
        """
        raise exception.NotSupported(
            'The %s driver cannot clone snapshots' % (self.name,))

    # -- the audit --------------------------------------------------------
    @abc.abstractmethod
    def inspect(self, locators):
        """For the audit: for each locator (disk or image), whether it
        exists, the image locator it is built on (None: it stands alone)
        and whether a check passes (``"ok"`` or the error); and every file
        in the image directories that none of ``locators`` names, each
        with the one of ``locators`` it is a leftover of, or None (what
        image work adds to a layer's name stripped: ``x.qcow2.deleted``
        is a leftover of the locator of ``x.qcow2``).  A locator the
        driver refuses has ``error`` set and nothing else looked at.

        :returns: ``{"images": [{"locator", "exists", "backing",
            "check", "error"}], "files": [{"path", "locator"}]}``.
        """

    @abc.abstractmethod
    def remove(self, path):
        """Remove an orphaned file found by the audit (a ``path`` of
        ``inspect``'s ``files``; refuses open ones and anything outside
        ``image_dirs``).  :returns: ``{"removed": bool, "error": str}``.
        """
