"""The QEMU/qcow2 backend: the patent's steps on a KVM host.

Locators (see ``agent.driver.base``)::

    disk   {"driver": "qemu", "qmp_socket": str or None, "path": str}
    image  {"driver": "qemu", "path": str}

``path`` is a qcow2 file inside the image directories: for a disk, its live
layer.  A disk is *online* when a QEMU answers on ``qmp_socket``; then the
backend's I/O is paused with QMP ``stop`` and resumed with ``cont``, and the
image graph is changed inside QEMU (``blockdev-add`` + ``blockdev-snapshot``
to create, ``block-stream`` to merge).  Otherwise the disk is *offline* and
``qemu-img`` does the work, after checking that no process holds the images.

The disk's ``path`` (the file its owner registered and starts the VM from)
always holds the live, writable layer (issue 20, docs/lifecycle.md): a
create named ``L`` gives the live file the second name ``L.qcow2`` beside
it (a hard link), moves QEMU's live node onto that name and makes ``path``
a new empty overlay on it, so ``L.qcow2`` is the snapshot; a commit of the
live layer into a snapshot links the snapshot's file over ``path``; a
revert makes ``path`` a new overlay on the snapshot.  Backing files are
named by their bare file names, so a QEMU started again from its owner's
command line (or on the moved directory) opens the same chain.

Every method records its steps on an :class:`agent.steps.StepRecorder` and is
idempotent: calling it again after a success, or after a crash at any point,
finishes the job without doing anything twice.  Resume always runs (in a
``finally``, with retries), and an online pivot that overruns
``pause_deadline`` is rolled back rather than leaving the VM paused.

QEMU reopens images by name (a pivot, a block job's start): a name is
re-pointed only after every QEMU node using it moved to another name of
the same file (``blockdev-reopen`` of the node's ``file`` child), or
inside a vCPU stop.
"""

import contextlib
import logging
import os
import re
import time

import tenacity

from agent.driver import fileimage
from agent.driver.qemu import graph as blockgraph
from agent.driver.qemu import qga
from agent.driver.qemu import qmp
from agent import exception
from agent import images

LOG = logging.getLogger(__name__)

#: a layer's name, as the conductor chooses it (ids only)
_LAYER_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\Z")


def _qmp_socket_of(cmdline):
    """The QMP unix socket a QEMU command line (argv list) opens with
    ``-qmp unix:PATH,...``, or None.
    """
    for flag, value in zip(cmdline, cmdline[1:]):
        if flag in ("-qmp", "--qmp") and value.startswith("unix:"):
            return value[len("unix:"):].split(",")[0] or None
    return None


def _job_failed(job_id, how, error):
    """The error to raise for a block job that did not succeed: NoSpace
    when the image directory filled up, else QMPError.
    """
    cls = exception.NoSpace if images.NO_SPACE in error else \
        exception.QMPError
    return cls("Block job %s %s: %s" % (job_id, how, error))


class _Connection(object):
    """One QMP session to a socket that is reopened after a failure, so a
    retried command never reuses a session with a reply still in flight.
    """

    def __init__(self, socket_path, timeout):
        self.socket_path = socket_path
        self.timeout = timeout
        self._session = None

    def get(self):
        if self._session is not None and self._session.broken:
            self.invalidate()
        if self._session is None:
            self._session = qmp.QMPSession(self.socket_path,
                                           timeout=self.timeout).open()
        return self._session

    def invalidate(self):
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.invalidate()


class QemuDriver(fileimage.FileImageDriver):
    """Snapshot, merge and delete qcow2 images of QEMU disks.

    Overrides of :class:`agent.driver.fileimage.FileImageDriver`: the VM is
    reached on the disk locator's ``qmp_socket`` (``list_vms``,
    ``is_online``, ``resume``), the online halves of create and merge are
    QMP (``_create_online``, ``_merge_online``, ``_commit_online``), the
    guest is quiesced through ``qga_socket``, a layer name is ids only,
    and a disk locator's ``qmp_socket`` is checked.

    :param image_dirs, pause_deadline, resume_retries, job_poll_interval,
        job_timeout, reserved_bytes, merge_speed, quiesce_timeout: see
        FileImageDriver; an online pivot that overruns ``pause_deadline``
        is aborted and rolled back, ``resume_retries`` counts attempts at
        ``cont``, a freeze never outlives ``quiesce_timeout`` (see
        :meth:`_quiesced`).
    :param qmp_timeout: seconds for connecting and for each QMP command
        (``[agent] qmp_timeout``).
    """

    name = "qemu"
    relative_backing = True

    def __init__(self, image_dirs, qmp_timeout=5.0, **options):
        super().__init__(image_dirs, **options)
        self.qmp_timeout = qmp_timeout

    @classmethod
    def conf_options(cls, conf):
        return dict(super().conf_options(conf),
                    qmp_timeout=conf.agent.qmp_timeout)

    # -- locators -----------------------------------------------------------
    def check(self, locator, kind="image"):
        """Refuse, before any I/O, a locator that is not this driver's or
        whose file (or QMP socket) is not a plain absolute path; the file
        must lie inside the image directories.

        :raises InvalidRequest, PathNotAllowed:
        """
        super().check(locator, kind)
        sock = locator.get("qmp_socket")
        if kind == "disk" and sock is not None and (
                not isinstance(sock, str) or not os.path.isabs(sock)
                or "\0" in sock):
            raise exception.InvalidRequest(
                "A QMP socket must be an absolute path: %r" % (sock,))

    def _check_layer_name(self, layer_name):
        """:raises InvalidRequest: ``layer_name`` is not ids only."""
        if not isinstance(layer_name, str) or \
                not _LAYER_NAME.match(layer_name):
            raise exception.InvalidRequest(
                "Invalid layer name %r" % (layer_name,))

    # -- the host -------------------------------------------------------------
    def list_vms(self):
        """The QEMUs of this host that a QMP socket of theirs can be found
        for: processes whose command line has ``-qmp unix:PATH`` and that
        answer on it.  A QEMU whose monitor is reached otherwise (libvirt's,
        a chardev) is not listed; the list may be empty.  Each disk is a
        block device with a medium, named by its device; a QEMU without
        devices (``-M none``) has one disk per top qcow2 node, named by
        the node.  A disk's locator names its top image.
        """
        vms = []
        for sock in sorted(set(self._qmp_sockets())):
            try:
                with qmp.QMPSession(sock, timeout=self.qmp_timeout) as s:
                    running = s.status() == "running"
                    name = (s.execute("query-name") or {}).get("name")
                    uuid = (s.execute("query-uuid") or {}).get("UUID")
                    block = s.execute("query-block") or []
                    graph = blockgraph.Graph(s)
            except exception.AgentError as exc:
                LOG.debug("No VM listed for %(sock)s: %(exc)s",
                          {"sock": sock, "exc": exc})
                continue
            disks = []
            for dev in block:
                inserted = dev.get("inserted")
                path = (blockgraph.Graph.filename(inserted) if inserted
                        else None)
                if path:
                    disks.append({
                        "name": dev.get("qdev") or dev.get("device"),
                        "locator": {"driver": self.name,
                                    "qmp_socket": sock, "path": path}})
            if not disks:
                disks = [{"name": node.get("node-name"),
                          "locator": {"driver": self.name,
                                      "qmp_socket": sock,
                                      "path": graph.filename(node)}}
                         for node in graph.nodes if graph.is_top(node)]
            vms.append({"name": name or sock, "uuid": uuid,
                        "running": running, "disks": disks})
        return vms

    @staticmethod
    def _qmp_sockets():
        """QMP sockets named on the command lines of this host's
        processes.
        """
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            sock = _qmp_socket_of(argv)
            if sock and os.path.isabs(sock):
                yield sock

    # -- the disk's state --------------------------------------------------
    def is_online(self, disk):
        """True if a QEMU answers on the disk's QMP socket."""
        return qmp.is_running(disk.get("qmp_socket"),
                              timeout=self.qmp_timeout)

    def resume(self, disk):
        """``cont`` the QEMU of ``disk`` if it is paused (with retries).

        :returns: True if it was paused and is resumed now.
        :raises QMPError: after the last attempt.
        """
        sock = disk.get("qmp_socket")
        if not sock or not self.is_online(disk):
            return False
        return self._resume_socket(sock)

    @tenacity.retry(stop=tenacity.stop_after_attempt(5),
                    wait=tenacity.wait_exponential(multiplier=0.1, max=2),
                    reraise=True)
    def _resume_socket(self, sock):
        with qmp.QMPSession(sock, timeout=self.qmp_timeout) as session:
            if session.status() == "paused":
                session.execute("cont")
                return True
        return False

    # -- the patent's methods -------------------------------------------------
    def create_snapshot(self, disk, layer_name, rec, quiesce=None):
        """The live layer becomes the snapshot
        ``layer_locator(disk, layer_name)``; the disk's path becomes a new
        live layer on top of it, and the disk's locator does not change
        (see base.Driver.create_snapshot and the module's doc).

        :param quiesce: ``required``, ``preferred`` or ``off`` (None): freeze
            the guest's filesystems around the pause through the guest
            agent at the disk's ``qga_socket`` (:meth:`_quiesced`).  The
            result says what the snapshot got: ``consistency``
            (``application`` or ``crash``) and ``consistency_reason``.
        :raises PathNotAllowed, ImageInUse, ImageError, QMPError,
            PauseDeadlineExceeded, ResumeFailed, InvalidRequest, NoSpace,
            QuiesceFailed:
        """
        new_path = self.layer_locator(disk, layer_name)["path"]
        active = self._confine(disk["path"])
        new = self._confine(new_path)
        if active == new:
            raise exception.InvalidRequest(
                "The new image must differ from the active image")
        if not os.path.exists(new):
            self._ensure_space(new, fileimage.LAYER_BYTES, "a new layer")
        online = self.is_online(disk)
        outcome = {"consistency": "crash",
                   "consistency_reason": "quiesce off"}
        if online:
            self._create_online(
                disk["qmp_socket"], active, new, rec,
                quiesce=(quiesce or "off", disk.get("qga_socket"), outcome))
        else:
            outcome["consistency_reason"] = (
                "offline: the server was not running; the disk is as the "
                "guest left it")
            self._create_offline(active, new, rec)
        return {"snapshot": self.image(new_path),
                "disk": disk,
                "size_bytes": images.actual_size(new),
                "online": online,
                "consistency": outcome["consistency"],
                "consistency_reason": outcome["consistency_reason"]}

    def create_snapshots(self, disks, layer_names, rec, quiesce=None):
        """Snapshot several disks of one QEMU in one pause: each live layer
        becomes a snapshot under its new layer ``layer_locator(disks[i],
        layer_names[i])``.  Online, every overlay is created and opened
        before the pause, then ``stop``, one QMP ``transaction`` of
        ``blockdev-snapshot`` actions (all disks or none) and ``cont`` go
        out as one batch (see :meth:`_paused`).  Offline, the overlays are
        created one by one (no guest writes meanwhile).

        :param quiesce: ``required``, ``preferred`` or ``off`` (None): the
            guest agent at the first disk's ``qga_socket`` freezes the
            guest once, after every overlay is ready and right before the
            pause, and thaws it once after the resume (:meth:`_quiesced`).
            Every disk's result says the same ``consistency`` and
            ``consistency_reason``.
        :returns: see base.Driver.create_snapshots.
        :raises PathNotAllowed, ImageInUse, ImageError, QMPError,
            PauseDeadlineExceeded, ResumeFailed, InvalidRequest, NoSpace,
            QuiesceFailed:
        """
        if len(disks) != len(layer_names) or not disks:
            raise exception.InvalidRequest("One layer name per disk")
        socks = set(d.get("qmp_socket") for d in disks)
        if len(socks) != 1:
            raise exception.InvalidRequest(
                "The disks of a snapshot group must be of one VM")
        pairs = []
        for disk, layer_name in zip(disks, layer_names):
            active = self._confine(disk["path"])
            new = self._confine(self.layer_locator(disk, layer_name)["path"])
            if active == new:
                raise exception.InvalidRequest(
                    "The new image must differ from the active image")
            pairs.append((active, new))
        if len(set(a for a, _ in pairs)) != len(pairs):
            raise exception.InvalidRequest("A disk is named twice")
        for _, new in pairs:
            if not os.path.exists(new):
                self._ensure_space(new, fileimage.LAYER_BYTES, "a new layer")
        online = self.is_online(disks[0])
        outcome = {"consistency": "crash",
                   "consistency_reason": "quiesce off"}
        if online:
            self._create_group_online(
                socks.pop(), pairs, rec,
                quiesce=(quiesce or "off", disks[0].get("qga_socket"),
                         outcome))
        else:
            outcome["consistency_reason"] = (
                "offline: the server was not running; the disks are as "
                "the guest left them")
            made = []
            try:
                for active, new in pairs:
                    if not os.path.exists(new):
                        made.append((active, new))
                    self._create_offline(active, new, rec)
            except BaseException:
                # All or none, as online: the live layers get their old
                # files back.
                for active, new in made:
                    self._undo_offline_create(active, new)
                raise
        return {"online": online, "snapshots": [
            {"snapshot": self.image(new),
             "disk": disk,
             "size_bytes": images.actual_size(new),
             "online": online,
             "consistency": outcome["consistency"],
             "consistency_reason": outcome["consistency_reason"]}
            for disk, (active, new) in zip(disks, pairs)]}

    def _create_group_online(self, sock, pairs, rec, quiesce=None):
        """Pivot every ``(active, new)`` of ``pairs`` in one transaction
        inside one pause; on failure nothing stays pivoted (QEMU's
        transaction is all or none) and the new nodes and files go.

        :param quiesce: ``(mode, qga_socket, outcome)`` for
            :meth:`_quiesced`, around the paused section only.
        """
        mode, qga_socket, outcome = quiesce or ("off", None, {})
        with self._connect(sock) as conn:
            session = conn.get()
            edges = blockgraph.Edges(session)
            done = [edges.child(blockgraph.top_node_name_for(new),
                                "backing") is not None
                    for _, new in pairs]
            if all(done):
                LOG.info("Group snapshot onto %(new)s already done",
                         {"new": [n for _, n in pairs]})
                outcome["consistency_reason"] = (
                    "the pivot was found done when the operation was run "
                    "again; whether the guest was frozen is not known")
                return
            if any(done):
                # A transaction pivots all or none: this is not ours.
                raise exception.InvalidRequest(
                    "Only some disks of the group are pivoted at %s" % sock)
            actions = []
            try:
                for active, new in pairs:
                    top, overlay = self._prepare_create(session, active,
                                                        new, rec)
                    actions.append({"type": "blockdev-snapshot",
                                    "data": {"node": top,
                                             "overlay": overlay}})
            except BaseException:
                for active, new in pairs[:len(actions) + 1]:
                    self._rollback_pivot(conn, active, new)
                raise
            was_running = session.status() == "running"
            try:
                # One freeze after every overlay is ready, right before
                # the pause; one thaw after the resume, in a finally.
                with self._quiesced(mode, qga_socket, rec, outcome):
                    self._paused(conn, rec, was_running, "pivot", [
                        ("transaction", {"actions": actions})],
                        disks=len(actions))
            except BaseException as exc:
                pivoted = [self._rollback_pivot(conn, active, new)
                           for active, new in pairs]
                if not all(pivoted) or isinstance(exc,
                                                  exception.ResumeFailed):
                    raise
                LOG.warning("The group pivot happened although the paused "
                            "section reported %(exc)s; keeping it",
                            {"exc": exc})
        LOG.info("Created online group snapshot of %(n)d disks at "
                 "%(sock)s, paused %(ms)s ms",
                 {"n": len(pairs), "sock": sock, "ms": rec.pause_ms})

    def merge(self, disk, snapshot, parent, child, rec, progress=None,
              child_is_leaf=False, cancelled=None):
        """See base.Driver.merge and ``_merge_paths`` for how.

        ``child`` is the live layer when its file is the disk's.
        :raises PathNotAllowed, ImageInUse, ImageError, QMPError,
            InvalidRequest, NoSpace, Cancelled, PauseDeadlineExceeded,
            ResumeFailed:
        """
        live = fileimage.same(self._confine(child.get("path")),
                              self._confine(disk.get("path")))
        result = self._merge_paths(
            disk, snapshot.get("path"),
            parent.get("path") if parent else None, child.get("path"), rec,
            progress=progress, child_is_leaf=child_is_leaf,
            cancelled=cancelled, live=live)
        survivor = result["child_image"]
        new_disk = dict(disk, path=survivor) if live else disk
        return {"child": new_disk if live else self.image(survivor),
                "disk": new_disk, "direction": result["direction"],
                "online": result["online"],
                "child_size_bytes": images.actual_size(
                    self._confine(survivor))}

    def revert(self, disk, snapshot, layer_name, rec):
        """The disk's path becomes a new empty live layer on ``snapshot``
        (see base.Driver.revert).  The old live layer loses its only name
        in the same rename: that is its discard (issue 20: the path keeps
        the live layer).  ``layer_name`` is checked, not used.

        :returns: ``{"disk": the disk's locator, unchanged, "online":
            False}``.
        :raises ServerRunning, PathNotAllowed, ImageError, InvalidRequest:
        """
        self._check_layer_name(layer_name)
        snap = self._confine(snapshot.get("path"))
        active = self._confine(disk.get("path"))
        if self.is_online(disk):
            raise exception.ServerRunning(
                "The server is running; shut it off before reverting")
        if images.is_locked(active):
            raise exception.ServerRunning(
                "%s is in use by a running process" % active)
        with rec.step("prepare", image=active, backing=snap):
            images.replace_with_overlay(active, snap)
        return {"disk": disk, "online": False}

    # -- helpers --------------------------------------------------------------
    def _connect(self, socket_path):
        return _Connection(socket_path, self.qmp_timeout)

    @staticmethod
    def _refuse_if_locked(path):
        if images.is_locked(path):
            raise exception.ImageInUse(
                "%s is held open by a running process; refusing to touch it "
                "without QMP" % path, image=path)

    @tenacity.retry(stop=tenacity.stop_after_attempt(5),
                    wait=tenacity.wait_exponential(multiplier=0.05, max=1.0),
                    retry=tenacity.retry_if_exception_type(exception.QMPError),
                    before_sleep=tenacity.before_sleep_log(
                        LOG, logging.WARNING),
                    reraise=True)
    def _cont(self, conn):
        try:
            conn.get().execute("cont")
        except exception.QMPError:
            conn.invalidate()
            raise

    def _resume(self, conn, rec, was_running):
        """The safety net: resume the backend with ``cont``, retried on a
        fresh connection.  Never leaves it paused unless it was paused
        before we started.  :raises ResumeFailed: after all retries.
        """
        if not was_running:
            LOG.info("Leaving %(sock)s paused, as it was found",
                     {"sock": conn.socket_path})
            rec.mark_resumed()
            return
        retrying = self._cont.retry_with(
            stop=tenacity.stop_after_attempt(self.resume_retries))
        try:
            retrying(self, conn)
        except Exception as exc:
            LOG.error("Could not resume %(sock)s after %(n)d attempts: "
                      "%(exc)s", {"sock": conn.socket_path,
                                  "n": self.resume_retries, "exc": exc})
            raise exception.ResumeFailed(
                "Could not resume the VM at %s: %s"
                % (conn.socket_path, exc))
        rec.mark_resumed()

    def _paused(self, conn, rec, was_running, step, commands, **detail):
        """Run ``commands`` (``(cmd, args)`` pairs) with the backend paused.

        The paused section reaches QEMU in one piece: ``stop``, the
        commands and ``cont`` go out in a single write before any reply is
        read, so the resume is queued inside QEMU before the pause begins
        and never waits for this process; QEMU runs ``cont`` even if a
        command before it fails or this agent stalls.  (If the agent dies,
        QEMU may drop what it has not read yet: the journal's record of the
        pause, written before it, makes the restarted agent resume the VM.)
        The replies are read afterwards and recorded as the steps
        ``pause``, ``step`` and ``resume``.  ``pause_ms`` is QEMU's own STOP
        to RESUME window (event timestamps); the agent's view (``stop``
        written to ``cont`` answered) is kept beside it as
        ``agent_pause_ms``.

        Each reply of the section must arrive within ``pause_deadline``, or
        the section fails with PauseDeadlineExceeded; ``cont``'s is still
        awaited (up to ``qmp_timeout``), and if it does not come the VM is
        resumed over a new connection, with retries.

        :returns: the results of ``commands``.
        :raises QMPError: a command failed (after the backend resumed).
        :raises ResumeFailed: the backend could not be resumed.
        """
        session = conn.get()
        batch = list(commands)
        if was_running:
            batch = [("stop", None)] + batch + [("cont", None)]
        session.events.clear()
        ids = []
        results = []
        try:
            with rec.step("pause", was_running=was_running):
                rec.mark_paused()
                ids = session.send(batch)
                if was_running:
                    _, error = self._await(session, ids[0], "stop")
                    if error is not None:
                        raise qmp.command_error("stop", error)
            body = ids[1:-1] if was_running else ids
            with rec.step(step, **detail):
                errors = []
                for (cmd, _), msg_id in zip(commands, body):
                    result, error = self._await(session, msg_id, cmd)
                    results.append(result)
                    if error is not None:
                        errors.append(qmp.command_error(cmd, error))
                if errors:
                    raise errors[0]
        finally:
            with rec.step("resume", left_paused=not was_running):
                self._finish_pause(conn, session, rec, was_running,
                                   ids[-1] if ids and was_running else None)
        LOG.info("Resumed %(sock)s after %(ms)s ms paused (agent: %(ams)s ms)",
                 {"sock": conn.socket_path, "ms": rec.pause_ms,
                  "ams": rec.agent_pause_ms})
        return results

    def _await(self, session, msg_id, cmd, timeout=None):
        """The reply to ``cmd`` of a paused section, by default within the
        pause deadline.

        :raises PauseDeadlineExceeded: QEMU did not answer in time.
        """
        timeout = self.pause_deadline if timeout is None else timeout
        try:
            return session.reply(msg_id, timeout)
        except exception.QMPError as exc:
            if not exc.kwargs.get("timeout"):
                raise
            raise exception.PauseDeadlineExceeded(
                "QEMU did not answer %s within %.1f ms"
                % (cmd, timeout * 1000.0))

    def _finish_pause(self, conn, session, rec, was_running, cont_id):
        """Read ``cont``'s reply on ``session`` (the one that sent it) and
        take the pause window from QEMU's events; fall back to
        :meth:`_resume` if the reply does not come.
        """
        if cont_id is not None and not session.broken:
            try:
                # Queued behind the section: QEMU runs it whatever this
                # process does, so wait for it with the full QMP timeout
                # even when the deadline has passed; closing the session
                # now would make QEMU drop it unread.
                result, error = self._await(session, cont_id, "cont",
                                            self.qmp_timeout)
                if error is not None:
                    raise qmp.command_error("cont", error)
            except exception.AgentError as exc:
                LOG.warning("No reply to the queued cont on %(sock)s "
                            "(%(exc)s); resuming again",
                            {"sock": conn.socket_path, "exc": exc})
                conn.invalidate()
            else:
                stop = session.last_event("STOP")
                resume = session.last_event("RESUME")
                qemu_ms = stopped_at = None
                if stop is not None and resume is not None:
                    stopped_at = qmp.event_time(stop)
                    qemu_ms = (qmp.event_time(resume)
                               - stopped_at) * 1000.0
                rec.mark_resumed(qemu_pause_ms=qemu_ms,
                                 qemu_paused_at=stopped_at)
                return
        self._resume(conn, rec, was_running)

    # -- create -------------------------------------------------------------
    # The disk's path R keeps the live layer (issue 20, docs/lifecycle.md):
    # the snapshot S gets R's file under its own name (a hard link), the
    # live node is moved off R onto S, R becomes a new empty overlay on S,
    # and the pivot puts R's node on top.
    def _create_offline(self, active, new, rec):
        self._refuse_if_locked(active)
        with rec.step("prepare", image=new):
            if not os.path.lexists(new):
                images.link(active, new)
            if os.path.samefile(active, new):
                images.replace_with_overlay(active, new)
        with rec.step("snapshot", snapshot=new, active=active):
            backing = images.backing_file(active)
            if not fileimage.same(backing, new):
                raise exception.ImageError(
                    "%s has backing %s, expected %s" % (active, backing, new))
        LOG.info("Created offline snapshot %(snap)s of %(active)s",
                 {"snap": new, "active": active})

    @staticmethod
    def _undo_offline_create(active, new):
        """Give ``active`` back the file ``new`` took from it."""
        try:
            if os.path.lexists(new):
                if not os.path.samefile(active, new):
                    images.link_over(new, active)
                images.remove(new)
        except (OSError, exception.AgentError) as exc:
            LOG.error("Cannot undo the snapshot %(new)s of %(active)s: "
                      "%(exc)s", {"new": new, "active": active, "exc": exc})

    def _swap_file(self, session, node, path):
        """Point the qcow2 node ``node`` (a ``Graph`` node) at the file
        named ``path`` (the same inode as its file now: a second name).

        ``blockdev-reopen`` with a new ``file`` child; a writable node goes
        through a file node with locking off first (a second locked rw fd
        on the inode is refused).  A file node the agent added for the old
        name is deleted.  Done already: nothing happens.
        """
        name = node["node-name"]
        edges = blockgraph.Edges(session)
        old_file = edges.child(name, "file")
        backing = edges.child(name, "backing")
        final = blockgraph.file_node_name_for(name, path)
        if old_file == final:
            return
        read_only = bool(node.get("ro"))
        cache = {"direct": node["cache"]["direct"],
                 "no-flush": node["cache"]["no-flush"]}

        def add(file_node, **extra):
            if file_node not in blockgraph.Edges(session).names:
                session.execute("blockdev-add", dict(
                    {"driver": "file", "node-name": file_node,
                     "filename": path, "cache": cache}, **extra))

        def reopen(file_node):
            session.execute("blockdev-reopen", {"options": [{
                "driver": "qcow2", "node-name": name,
                "read-only": read_only, "file": file_node,
                "backing": backing}]})

        def drop(file_node):
            if file_node and not file_node.startswith("#") and \
                    file_node in blockgraph.Edges(session).names:
                session.execute("blockdev-del", {"node-name": file_node})

        if read_only:
            add(final)
            reopen(final)
            drop(old_file)
        else:
            hop = blockgraph.file_node_name_for(name, path, prefix="ls-x-")
            add(hop, locking="off")
            reopen(hop)
            drop(old_file)
            add(final)
            reopen(final)
            drop(hop)
        LOG.debug("Node %(node)s now opens %(path)s",
                  {"node": name, "path": path})

    def _prepare_create(self, session, active, new, rec):
        """The create's work before the pause (docs/lifecycle.md, "Create
        (online)", steps 1-4), each safe to repeat.

        :returns: ``(top, overlay)`` node names for ``blockdev-snapshot``,
            or ``(None, overlay)`` if the pivot is done already.
        :raises InvalidRequest: ``active`` is not the QEMU's live layer.
        """
        overlay = blockgraph.top_node_name_for(new)
        graph = blockgraph.Graph(session)
        edges = blockgraph.Edges(session)
        if edges.child(overlay, "backing") is not None:
            return None, overlay
        top = None
        for node in graph.nodes:
            if node["node-name"] != overlay \
                    and edges.is_top(node["node-name"]) \
                    and (fileimage.same(graph.filename(node), active)
                         or fileimage.same(graph.filename(node), new)):
                top = node
        if top is None:
            raise exception.InvalidRequest(
                "%s is not the active layer of the QEMU at %s"
                % (active, session.socket_path))
        with rec.step("prepare", image=new, node=overlay):
            if not os.path.lexists(new):
                images.link(active, new)
            if fileimage.same(graph.filename(top), active):
                self._swap_file(session, top, new)
            if os.path.samefile(active, new):
                images.replace_with_overlay(active, new)
            elif not fileimage.same(images.backing_file(active), new):
                raise exception.ImageError(
                    "%s is neither %s nor an overlay on it" % (active, new))
            # ``stop`` flushes every node; what is written back now is not
            # written inside the pause.
            images.flush(new)
            if overlay not in edges.names:
                session.execute("blockdev-add", {
                    "driver": "qcow2", "node-name": overlay,
                    "file": {"driver": "file", "filename": active,
                             "node-name": overlay + "-f"},
                    "backing": None,
                    "cache": {
                        "direct": top["cache"]["direct"],
                        "no-flush": top["cache"]["no-flush"]}})
        return top["node-name"], overlay

    def _create_online(self, sock, active, new, rec, quiesce=None):
        mode, qga_socket, outcome = quiesce or ("off", None, {})
        with self._connect(sock) as conn:
            session = conn.get()
            top, overlay = self._prepare_create(session, active, new, rec)
            if top is None:
                LOG.info("Snapshot %(new)s of %(snap)s already done",
                         {"snap": active, "new": new})
                outcome["consistency_reason"] = (
                    "the pivot was found done when the operation was run "
                    "again; whether the guest was frozen is not known")
                return
            was_running = session.status() == "running"
            try:
                with self._quiesced(mode, qga_socket, rec, outcome):
                    self._paused(conn, rec, was_running, "pivot", [
                        ("blockdev-snapshot",
                         {"node": top, "overlay": overlay})],
                        node=top, overlay=overlay)
            except BaseException as exc:
                pivoted = self._rollback_pivot(conn, active, new)
                if not pivoted or isinstance(exc, exception.ResumeFailed):
                    raise
                LOG.warning("The pivot onto %(new)s happened although the "
                            "paused section reported %(exc)s; keeping it",
                            {"new": new, "exc": exc})
        LOG.info("Created online snapshot %(new)s of %(snap)s, paused "
                 "%(ms)s ms", {"snap": active, "new": new,
                               "ms": rec.pause_ms})

    @contextlib.contextmanager
    def _quiesced(self, mode, qga_socket, rec, outcome):
        """Freeze the guest's filesystems around the block (the pause),
        thaw them after it in a ``finally``.

        ``mode`` ``off``: nothing.  Otherwise the guest agent at
        ``qga_socket`` gets ``guest-sync`` and ``guest-fsfreeze-freeze``
        within ``quiesce_timeout`` (step ``freeze``, journaled durably
        before it is sent, so a restarted agent thaws); if it does not
        answer in time or fails, the guest is thawed at once and the
        snapshot goes on crash-consistent (``preferred``) or the create
        fails (``required``).  After the block: ``guest-fsfreeze-thaw``
        (step ``thaw``).  ``outcome`` gets ``consistency`` and
        ``consistency_reason``.

        :raises QuiesceFailed: ``required`` and no freeze.
        """
        outcome.update(consistency="crash", consistency_reason="quiesce off")
        if mode == "off":
            yield
            return
        if not qga_socket:
            reason = "no guest agent channel registered for the server"
            if mode == "required":
                raise exception.QuiesceFailed(
                    "Quiesce required but %s" % reason)
            outcome["consistency_reason"] = reason
            yield
            return
        session = qga.QGASession(qga_socket, timeout=self.quiesce_timeout)
        frozen_at = time.monotonic()
        try:
            with rec.step("freeze", qga_socket=qga_socket,
                          timeout=self.quiesce_timeout) as entry:
                session.open()
                left = self.quiesce_timeout - (time.monotonic() - frozen_at)
                if left <= 0:
                    raise qga.QGATimeout("The guest agent at %s answered "
                                         "guest-sync too late" % qga_socket)
                entry.setdefault("detail", {})["filesystems"] = \
                    session.freeze(timeout=left)
        except exception.AgentError as exc:
            session.close()
            # It may have frozen after all, late: never leave it so.
            self._thaw(qga_socket, rec)
            if mode == "required":
                raise exception.QuiesceFailed(
                    "Quiesce required but the guest could not be frozen: "
                    "%s" % exc)
            LOG.warning("Snapshot goes on crash-consistent: no freeze of "
                        "the guest at %(sock)s: %(exc)s",
                        {"sock": qga_socket, "exc": exc})
            outcome["consistency_reason"] = (
                "the guest agent did not freeze the filesystems: %s" % exc)
            yield
            return
        outcome.update(consistency="application",
                       consistency_reason="filesystems frozen by the guest "
                                          "agent during the pause")
        try:
            yield
        finally:
            self._thaw(qga_socket, rec, session)

    def _thaw(self, qga_socket, rec, session=None):
        """Step ``thaw``: ``guest-fsfreeze-thaw`` on ``session`` if it is
        still usable, else on a new one after ``guest-fsfreeze-status``.
        Logs, never raises: the journal keeps the guest marked frozen and
        recovery thaws it.
        """
        try:
            with rec.step("thaw", qga_socket=qga_socket):
                try:
                    if session is None:
                        raise qga.QGAError("no session")
                    session.thaw(timeout=self.quiesce_timeout)
                except qga.QGAError:
                    if session is not None:
                        session.close()
                        session = None
                    qga.thaw(qga_socket, timeout=self.quiesce_timeout)
        except exception.AgentError as exc:
            LOG.error("Could not thaw the guest at %(sock)s: %(exc)s",
                      {"sock": qga_socket, "exc": exc})
        finally:
            if session is not None:
                session.close()

    def can_quiesce(self, disk):
        """Always: :meth:`_quiesced` freezes through the disk's
        ``qga_socket``, or says why not (no channel, no answer).
        """
        return True

    def thaw_guest(self, disk):
        """Thaw the guest of ``disk`` (its ``qga_socket``) if frozen; for
        recovery and the thaw retries.  :returns: True if it was frozen.
        :raises QGAError:
        """
        sock = disk.get("qga_socket")
        if not sock:
            return False
        return qga.thaw(sock, timeout=self.quiesce_timeout)

    def _rollback_pivot(self, conn, active, new):
        """Undo a create whose pivot did not happen: drop the new node,
        give ``active`` back its file, move the live node back onto it and
        unlink ``new``.  Keeps everything if the pivot did happen after all
        (e.g. a reply came too late but QEMU executed the command).

        :returns: True if the pivot happened (nothing was undone).
        """
        overlay = blockgraph.top_node_name_for(new)
        try:
            session = conn.get()
            graph = blockgraph.Graph(session)
            edges = blockgraph.Edges(session)
            if edges.child(overlay, "backing") is not None:
                LOG.warning("Pivot onto %(new)s happened; not rolling "
                            "back", {"new": new})
                return True
            for name in (overlay, overlay + "-f"):
                if name in blockgraph.Edges(session).names:
                    session.execute("blockdev-del", {"node-name": name})
            if os.path.lexists(new) and not os.path.samefile(active, new):
                images.link_over(new, active)
            for node in graph.nodes:
                if node["node-name"] != overlay and \
                        fileimage.same(graph.filename(node), new):
                    self._swap_file(session, node, active)
            images.remove(new)
            LOG.info("Rolled back the snapshot %(new)s", {"new": new})
        except Exception as exc:
            conn.invalidate()
            LOG.error("Rollback of the snapshot %(new)s failed: %(exc)s",
                      {"new": new, "exc": exc})
            # QEMU is unreachable: the files go back only if nobody holds
            # them (a QEMU that exited).
            self._undo_create_files(active, new)
        return False

    def _undo_create_files(self, active, new):
        """Give ``active`` back its file from ``new`` and unlink ``new``,
        if no process holds either; logs, never raises.
        """
        try:
            for path in (active, new):
                if os.path.lexists(path) and (images.open_by(path)
                                              or images.is_locked(path)):
                    LOG.error("Cannot undo the snapshot %(new)s: %(path)s "
                              "is in use", {"new": new, "path": path})
                    return
        except exception.AgentError as exc:
            LOG.error("Cannot undo the snapshot %(new)s: %(exc)s",
                      {"new": new, "exc": exc})
            return
        self._undo_offline_create(active, new)

    # -- merge --------------------------------------------------------------
    def _merge_paths(self, disk, snapshot_image, parent_image, child_image,
                     rec, progress=None, child_is_leaf=False,
                     cancelled=None, live=False):
        """Merge, for the disk (locator) ``disk``, ``snapshot_image`` with
        its only child so that one file holds what the child shows, on top
        of ``parent_image`` (None: the snapshot is the root and the result
        stands alone), and delete the other file.

        The copy costs the smaller side.  By default the snapshot's data is
        streamed into the child (``block-stream`` online, ``qemu-img
        rebase`` offline) and the child's file stays.  When the child is a
        leaf (the live image, or a snapshot nobody builds on) and holds
        less data than the snapshot, the child's data is committed into the
        snapshot's file instead (``block-commit`` of the active layer and a
        pivot online, ``qemu-img commit`` offline), and the snapshot's file
        then stands for the child: the result's ``child_image`` names it.
        Either way what every remaining image shows stays byte-for-byte the
        same, and the tree (the child's parent becomes the snapshot's
        parent) is the same.

        :param progress: optional callable(percent) called while a job runs.
        :param child_is_leaf: nothing but the child is built on the child.
        :param cancelled: optional callable; when it returns True while the
            data is being copied, the job is dropped and Cancelled raised
            (never once the pause has begun).
        :returns: ``{"child_image", "parent_image", "online", "direction"}``
            with ``direction`` ``stream`` or ``commit``.
        """
        snap, parent, child = self._merge_operands(
            snapshot_image, parent_image, child_image)
        online = self.is_online(disk)
        result = {"child_image": child_image, "parent_image": parent_image,
                  "online": online, "direction": "stream"}
        # A commit of the live layer leaves it at the disk's path (issue
        # 20): the snapshot's file is linked over it inside the pause.
        committed = dict(result, child_image=child_image if live
                         else snapshot_image, direction="commit")

        if self._streamed_already(snap, parent, child):
            return result
        if live and os.path.samefile(snap, child):
            # Committed and linked over the live path; finish.
            if online:
                with self._connect(disk["qmp_socket"]) as conn:
                    self._finish_live_commit(
                        conn, rec, snap, parent, child,
                        blockgraph.commit_job_id_for(child))
            else:
                with rec.step("purge", image=snap):
                    images.remove(snap)
            return committed
        if child_is_leaf and not live and not os.path.lexists(child):
            LOG.info("Commit of %(child)s into %(snap)s already done",
                     {"snap": snap, "child": child})
            images.purge(child)
            return committed

        if online:
            with self._connect(disk["qmp_socket"]) as conn:
                session = conn.get()
                commit_job = blockgraph.commit_job_id_for(child)
                if session.job(commit_job) is not None:
                    self._commit_online(conn, snap, parent, child, rec,
                                        progress, cancelled)
                    return committed
                graph = blockgraph.Graph(session)
                child_node = graph.node(child)
                if child_node is None and child_is_leaf \
                        and graph.node(snap) is not None \
                        and graph.is_top(graph.node(snap)):
                    # Committed and pivoted; the child's node is gone.
                    self._commit_online(conn, snap, parent, child, rec,
                                        progress, cancelled)
                    return committed
                if child_node is not None:
                    if child_is_leaf and graph.is_top(child_node) \
                            and self._cheaper_to_commit(snap, child):
                        self._commit_online(conn, snap, parent, child, rec,
                                            progress, cancelled)
                        return committed
                    self._merge_online(conn, snap, parent, child, rec,
                                       progress, cancelled)
                    return result
        result["online"] = committed["online"] = False
        if self._merge_files(snap, parent, child, rec, child_is_leaf,
                             live=live) == "commit":
            return committed
        return result

    def _finish_online_merge(self, conn, rec, keep, parent, drop,
                             job_id=None):
        """After the resume: check that ``keep`` (the file that now holds
        the child) is backed by ``parent``, take ``drop``'s node out of
        QEMU (before the finished commit job ``job_id`` is dismissed, so a
        crash here still finds the job), rename ``drop``'s file away and
        unlink it last.
        """
        session = conn.get()
        with rec.step("reparent", image=keep, parent=parent):
            graph = blockgraph.Graph(session)
            node = graph.node(keep)
            backing = graph.backing(node) if node else None
            if node is None or not fileimage.same(backing, parent):
                raise exception.QMPError(
                    "%s has backing %s after the merge, expected %s"
                    % (keep, backing, parent))
        with rec.step("delete", image=drop):
            self._release_node(session, drop)
            if blockgraph.Graph(session).node(keep) is None:
                # Never a success with the survivor closed (issue 20).
                raise exception.QMPError(
                    "%s is no longer open by QEMU after %s was taken out"
                    % (keep, drop))
            if job_id is not None and session.job(job_id) is not None:
                session.execute("job-dismiss", {"id": job_id})
            images.trash(drop)
        with rec.step("purge", image=drop):
            images.purge(drop)

    def _commit_online(self, conn, snap, parent, child, rec, progress,
                       cancelled=None):
        """Commit the live image ``child`` into ``snap`` and pivot the disk
        onto ``snap``'s node.

        ``block-commit`` of the active layer mirrors the child's data into
        the snapshot's file while the VM runs; ``job-complete`` makes QEMU
        drain the disk's I/O, write the last of it, switch the disk to the
        snapshot's node and let the I/O go on: the pause is QEMU's drained
        section (no ``stop``: the vCPUs keep running).  ``pause_ms`` counts
        from ``job-complete`` written to the job's ``concluded`` event.

        Safe to repeat at any point: a finished job tells by its error
        whether the pivot happened; once it is dismissed the graph does.
        """
        session = conn.get()
        job_id = blockgraph.commit_job_id_for(child)
        job = session.job(job_id)
        pivoted = False
        if job is not None and job["status"] in blockgraph.JOB_DONE:
            if job.get("error"):
                session.execute("job-dismiss", {"id": job_id})
                job = None
            else:
                pivoted = True
        graph = blockgraph.Graph(session)
        if job is None and not pivoted:
            child_node = graph.node(child)
            snap_node = graph.node(snap)
            if child_node is None:
                pivoted = snap_node is not None and graph.is_top(snap_node)
                if not pivoted:
                    raise exception.InvalidRequest(
                        "%s is not open by the QEMU at %s"
                        % (child, conn.socket_path))
            elif not fileimage.same(graph.backing(child_node), snap):
                raise exception.ImageError(
                    "%s has backing %s, expected %s"
                    % (child, graph.backing(child_node), snap))
        if not pivoted:
            if job is None:
                self._ensure_space(snap, images.actual_size(child),
                                   "the merge")
            with rec.step("prepare", job=job_id, image=snap,
                          direction="commit"):
                try:
                    if job is None:
                        base_node = self._adopt(session, graph, snap,
                                                parent, child)
                        args = {
                            "job-id": job_id,
                            "device": graph.node(child)["node-name"],
                            "base-node": base_node,
                            "auto-finalize": True, "auto-dismiss": False}
                        if self.merge_speed:
                            args["speed"] = self.merge_speed
                        session.execute("block-commit", args)
                    self._wait_job(session, job_id, ("ready",), progress,
                                   cancelled)
                    images.flush(snap)
                except BaseException:
                    self._drop_job(conn, job_id)
                    raise
            if progress is not None:
                progress(100.0)
            # The vCPUs stop around the pivot and the re-point of the
            # disk's path at the snapshot's file (now the live one): a VM
            # started again from its owner's definition at any instant
            # opens every write (docs/lifecycle.md).
            was_running = session.status() == "running"
            try:
                with rec.step("pause", was_running=was_running):
                    rec.mark_paused()
                    session.events.clear()
                    if was_running:
                        session.execute("stop")
                    session.execute("job-complete", {"id": job_id})
                with rec.step("merge", job=job_id, direction="commit"):
                    job = self._wait_job(session, job_id, blockgraph.JOB_DONE)
                    if job.get("error"):
                        raise _job_failed(job_id, "failed", job["error"])
                    images.link_over(snap, child)
            except BaseException:
                if not os.path.samefile(snap, child):
                    self._drop_job(conn, job_id)
                raise
            finally:
                with rec.step("resume", left_paused=not was_running):
                    self._resume(conn, rec, was_running)
        self._finish_live_commit(conn, rec, snap, parent, child, job_id)
        LOG.info("Committed %(child)s into %(snap)s online, I/O drained "
                 "%(ms)s ms", {"snap": snap, "child": child,
                               "ms": rec.pause_ms})

    def _finish_live_commit(self, conn, rec, snap, parent, child, job_id):
        """After the commit of the live layer into ``snap`` and the link of
        ``snap``'s file over the disk's path ``child``: take the old top
        node out (and its file node), move the survivor's node onto
        ``child`` and unlink ``snap``.  Safe to repeat.
        """
        session = conn.get()
        with rec.step("reparent", image=child, parent=parent):
            if not os.path.samefile(snap, child):
                images.link_over(snap, child)
            graph = blockgraph.Graph(session)
            survivor = [n for n in graph.nodes
                        if fileimage.same(graph.filename(n), snap)]
            old_top = [n for n in graph.nodes
                       if fileimage.same(graph.filename(n), child)]
            if survivor:
                backing = graph.backing(survivor[0])
                if not fileimage.same(backing, parent):
                    raise exception.QMPError(
                        "%s has backing %s after the merge, expected %s"
                        % (snap, backing, parent))
        with rec.step("delete", image=snap):
            if survivor:
                for node in old_top:
                    self._del_node(session, node["node-name"])
                if session.job(job_id) is not None:
                    session.execute("job-dismiss", {"id": job_id})
                graph = blockgraph.Graph(session)
                node = [n for n in graph.nodes
                        if fileimage.same(graph.filename(n), snap)]
                if not node:
                    # Never a success with the survivor closed (issue 20).
                    raise exception.QMPError(
                        "%s is no longer open by QEMU after the merge"
                        % snap)
                self._swap_file(session, node[0], child)
        with rec.step("purge", image=snap):
            images.remove(snap)

    @staticmethod
    def _del_node(session, name):
        """``blockdev-del`` qcow2 node ``name`` and then its file node if
        the agent added that one (it would stay open, F4).
        """
        file_node = blockgraph.child_name(session, name, "file")
        session.execute("blockdev-del", {"node-name": name})
        if file_node and not file_node.startswith("#") and \
                file_node in blockgraph.Edges(session).names:
            session.execute("blockdev-del", {"node-name": file_node})

    @staticmethod
    def _adopt(session, graph, snap, parent, child):
        """The node name to commit ``child`` into: ``snap``'s node, made
        the monitor's own first if QEMU opened it by itself.

        After the VM's owner started QEMU again from its own command line,
        the layers under the live one are ``#block`` nodes QEMU opened from
        the image headers, held only by their child's ``backing`` edge.  In
        a QEMU without a guest device ``job-complete`` re-parents nothing,
        so deleting the old top after the commit would close the survivor
        and everything under it (issue 20, "A restart breaks the next
        merge").  So ``snap`` gets a node of the agent's (``blockdev-add``,
        read-only, on the same backing node) and the child's ``backing`` is
        pointed at it (``blockdev-reopen``); QEMU's own node then closes.
        Safe to repeat (docs/lifecycle.md, F7).
        """
        snap_node = graph.node(snap)
        if not snap_node["node-name"].startswith("#"):
            return snap_node["node-name"]
        name = blockgraph.node_name_for(snap)
        child_node = graph.node(child)
        if not any(n["node-name"] == name for n in graph.nodes):
            parent_node = graph.node(parent) if parent else None
            session.execute("blockdev-add", {
                "driver": "qcow2", "node-name": name, "read-only": True,
                "file": {"driver": "file", "filename": snap},
                "backing": parent_node["node-name"] if parent_node
                else None,
                "cache": {"direct": child_node["cache"]["direct"],
                          "no-flush": child_node["cache"]["no-flush"]}})
        top = child_node["node-name"]
        if blockgraph.child_name(session, top, "backing") != name:
            session.execute("blockdev-reopen", {"options": [{
                "driver": "qcow2", "node-name": top,
                "file": blockgraph.child_name(session, top, "file"),
                "backing": name}]})
        LOG.info("Adopted %(snap)s (QEMU opened it from %(child)s's "
                 "header) as node %(node)s before the commit",
                 {"snap": snap, "child": child, "node": name})
        return name

    def _wait_job(self, session, job_id, want, progress=None,
                  cancelled=None):
        """Poll ``query-jobs`` until job ``job_id`` reaches a status in
        ``want``; returns the job.

        :raises QMPError: if it ends otherwise or overruns ``job_timeout``.
        :raises Cancelled: if ``cancelled()`` turns true meanwhile.
        """
        start = time.monotonic()
        while True:
            job = session.job(job_id)
            if job is None:
                raise exception.QMPError("Block job %s disappeared" % job_id)
            if progress is not None:
                total = job.get("total-progress") or 0
                done = job.get("current-progress") or 0
                try:
                    progress(100.0 * done / total if total else 0.0)
                except Exception:  # noqa - a reporting bug must not abort
                    LOG.exception("Progress callback failed")
            if job["status"] in want:
                return job
            if job["status"] in blockgraph.JOB_DONE \
                    or job["status"] == "aborting":
                raise _job_failed(job_id, "ended (%s)" % job["status"],
                                  job.get("error", "no error"))
            if cancelled is not None and cancelled():
                raise exception.Cancelled(
                    "The merge was cancelled by an administrator while it "
                    "copied; the images are as they were")
            if (self.job_timeout is not None
                    and time.monotonic() - start > self.job_timeout):
                raise exception.QMPError("Block job %s timed out" % job_id)
            time.sleep(self.job_poll_interval)

    def _drop_job(self, conn, job_id):
        """Best effort: cancel and dismiss ``job_id``."""
        try:
            session = conn.get()
            job = session.job(job_id)
            if job is None:
                return
            if job["status"] not in blockgraph.JOB_DONE:
                session.execute("job-cancel", {"id": job_id})
                job = self._wait_job(session, job_id, blockgraph.JOB_DONE)
            session.execute("job-dismiss", {"id": job_id})
        except Exception as exc:
            conn.invalidate()
            LOG.warning("Could not drop block job %(job)s: %(exc)s",
                        {"job": job_id, "exc": exc})

    @staticmethod
    def _release_node(session, path):
        """Make sure QEMU no longer holds image ``path``.

        A node QEMU opened itself as a backing file closes once the merge
        drops it from the chain, but a node added by ``blockdev-add`` or
        ``-blockdev`` (every overlay we pivoted to, and the disk's first
        image) belongs to the monitor and stays open until ``blockdev-del``.

        :raises ImageInUse: if the node is still in use.
        """
        node = blockgraph.Graph(session).node(path)
        if node is None:
            return
        file_node = blockgraph.child_name(session, node["node-name"], "file")
        try:
            session.execute("blockdev-del", {"node-name": node["node-name"]})
            if file_node and not file_node.startswith("#") and \
                    file_node in blockgraph.Edges(session).names:
                session.execute("blockdev-del", {"node-name": file_node})
        except exception.QMPError as exc:
            if exc.kwargs.get("error_class") is None:
                raise
            LOG.debug("blockdev-del %(node)s: %(exc)s",
                      {"node": node["node-name"], "exc": exc})
        if blockgraph.Graph(session).node(path) is not None:
            raise exception.ImageInUse("%s is still open by QEMU" % path,
                                       image=path)

    def _merge_online(self, conn, snap, parent, child, rec, progress,
                      cancelled=None):
        session = conn.get()
        job_id = blockgraph.job_id_for(child)
        # A job left finished by an interrupted attempt is dismissed here;
        # the graph tells what it did.
        graph = blockgraph.Graph(session)
        job = session.job(job_id)
        child_node = graph.node(child)
        backing = graph.backing(child_node)

        if job is None and fileimage.same(backing, parent):
            # Streamed already; only the file is left to delete.
            with rec.step("reparent", image=child, parent=parent):
                pass
            with rec.step("delete", image=snap):
                self._release_node(session, snap)
                images.remove(snap)
                images.purge(snap)
            return
        if job is None and not fileimage.same(backing, snap):
            raise exception.ImageError(
                "%s has backing %s, expected %s" % (child, backing, snap))

        args = {"job-id": job_id, "device": child_node["node-name"],
                "auto-finalize": False, "auto-dismiss": False}
        if self.merge_speed:
            args["speed"] = self.merge_speed
        if parent is not None:
            parent_node = graph.node(parent)
            if parent_node is None:
                raise exception.InvalidRequest(
                    "%s is not open by the QEMU at %s"
                    % (parent, conn.socket_path))
            args["base-node"] = parent_node["node-name"]
            # The bare name: the chain resolves after a restart and after
            # the directory moved (issue 20).
            args["backing-file"] = os.path.basename(parent)

        if job is None:
            self._ensure_space(child, images.actual_size(snap), "the merge")
        with rec.step("prepare", job=job_id, image=child):
            try:
                if job is None:
                    session.execute("block-stream", args)
                self._wait_job(session, job_id, ("pending",), progress,
                               cancelled)
                # The copied data is in the host's page cache: write it
                # back now, not inside the pause (stop flushes).
                images.flush(child)
            except BaseException:
                self._drop_job(conn, job_id)
                raise
        if progress is not None:
            progress(100.0)

        was_running = session.status() == "running"
        try:
            # QEMU finalizes the job inside the pause: the child's backing
            # link is rewritten to the parent (the patent's merge and
            # re-parent) and the snapshot's node leaves the chain.
            self._paused(conn, rec, was_running, "merge",
                         [("job-finalize", {"id": job_id})], job=job_id)
            job = self._wait_job(conn.get(), job_id, blockgraph.JOB_DONE)
            if job.get("error"):
                raise _job_failed(job_id, "failed", job["error"])
        finally:
            self._drop_job(conn, job_id)
        self._finish_online_merge(conn, rec, child, parent, snap)
        LOG.info("Merged %(snap)s into %(child)s online, paused %(ms)s ms",
                 {"snap": snap, "child": child, "ms": rec.pause_ms})
