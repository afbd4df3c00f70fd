"""The base of backends whose layers are qcow2 files: the chain work.

Both the QEMU and the libvirt driver keep a disk as a chain of qcow2
files in the image directories, a new layer ``L`` beside the live one as
``L.qcow2``, and do the same image work where no running QEMU holds the
layers: ``qemu-img`` merges both ways, clones, deletes, the audit's look
at the files.  That work is here, once (as cinder keeps every file-based
backend's qcow2 chain in ``RemoteFSSnapDriverBase``); a backend states
what it overrides:

* how it reaches a running VM: ``list_vms``, ``is_online``, ``resume``,
  the online halves of ``create_snapshot(s)`` and ``merge``, ``revert``'s
  check that the VM is shut off, quiesce;
* what its disk locators hold besides ``path`` (:meth:`check`) and what a
  layer name may be (:meth:`_check_layer_name`).

Image locators are ``{"driver": name, "path": file}`` for every file-image
backend (:meth:`image`).
"""

import logging
import os
import stat

from agent.driver import base
from agent import exception
from agent import images
from agent import paths
from agent import steps
from livesnap import locators

LOG = logging.getLogger(__name__)

#: room a new, empty layer takes (header, tables) with some margin
LAYER_BYTES = 1024 * 1024

#: a layer's file name, beside the disk's live layer, for a layer name
LAYER_FILE = '%s.qcow2'

#: most locators one ``inspect`` looks at
INSPECT_MAX = 10000

#: what image work appends to a layer's file name while it works on it
#: (``agent.images``' trash and temporary files); one definition, the
#: conductor's (``livesnap.locators``)
WORK_SUFFIX = locators.WORK_SUFFIX

MiB = 1024.0 * 1024.0


def is_file(path):
    """A regular file or a symbolic link (not a socket, fifo or device)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISLNK(mode)


def same(a, b):
    """True if ``a`` and ``b`` name the same file (or are both None)."""
    if a is None or b is None:
        return a is None and b is None
    return os.path.realpath(a) == os.path.realpath(b)


class FileImageDriver(base.Driver):
    """A backend whose layers are qcow2 files in the image directories.

    :param image_dirs: directories the agent may touch (see agent.paths).
    :param pause_deadline: seconds the VM may stay paused for a switch
        before the driver ends the pause (``[agent] pause_deadline``).
    :param resume_retries: attempts at resuming before ResumeFailed
        (``[agent] resume_retries``).
    :param job_poll_interval: seconds between two looks at a merge's
        block job.
    :param job_timeout: seconds a merge's block job may run (None: no
        limit; ``[agent] merge_timeout``).
    :param reserved_bytes: free space an image directory keeps; work that
        would need more is refused with NoSpace before it starts
        (``[agent] reserved_space_mb``).
    :param merge_speed: bytes per second a merge's block job may copy (0:
        no limit; ``[agent] merge_rate_limit_mb``).
    :param quiesce_timeout: seconds the guest agent has to freeze the
        guest's filesystems (``[agent] quiesce_timeout``).
    """

    def __init__(self, image_dirs, pause_deadline=0.5, resume_retries=5,
                 job_poll_interval=0.05, job_timeout=None, reserved_bytes=0,
                 merge_speed=0, quiesce_timeout=10.0, **options):
        super().__init__(image_dirs, **options)
        self.pause_deadline = pause_deadline
        self.resume_retries = max(1, int(resume_retries))
        self.job_poll_interval = job_poll_interval
        self.job_timeout = job_timeout
        self.reserved_bytes = reserved_bytes
        self.merge_speed = merge_speed
        self.quiesce_timeout = quiesce_timeout

    @classmethod
    def conf_options(cls, conf):
        """The constructor's arguments from ``[agent]``; a backend adds
        its own group's.
        """
        agent = conf.agent
        return dict(
            super().conf_options(conf),
            pause_deadline=agent.pause_deadline,
            resume_retries=agent.resume_retries,
            quiesce_timeout=agent.quiesce_timeout,
            job_timeout=agent.merge_timeout,
            merge_speed=agent.merge_rate_limit_mb * 1024 * 1024,
            reserved_bytes=agent.reserved_space_mb * 1024 * 1024)

    # -- locators -----------------------------------------------------------
    def image(self, path):
        """The image locator of the qcow2 file ``path``."""
        return {'driver': self.name, 'path': path}

    def check(self, locator, kind='image'):
        """base.Driver.check, and the file inside the image directories;
        a backend checks what else its disk locators name.

        :raises InvalidRequest, PathNotAllowed:
        """
        super().check(locator, kind)
        self._confine(locator.get('path'))

    def _check_layer_name(self, layer_name):
        """:raises InvalidRequest: ``layer_name`` is no plain name."""
        if (not isinstance(layer_name, str) or not layer_name
                or '/' in layer_name or layer_name.startswith('.')):
            raise exception.InvalidRequest('Bad layer name %r' % layer_name)

    def layer_locator(self, disk, layer_name):
        """``<directory of the live layer>/<layer_name>.qcow2``.

        :raises InvalidRequest: ``layer_name`` is not a plain name.
        """
        self._check_layer_name(layer_name)
        return self.image(os.path.join(os.path.dirname(disk['path']),
                                       LAYER_FILE % layer_name))

    # -- delete -------------------------------------------------------------
    def delete_image(self, image, rec):
        """Delete the layer's file (see base.Driver.delete_image).

        :raises PathNotAllowed, ImageInUse:
        """
        self._delete_path(image.get('path') if isinstance(image, dict)
                          else image, rec)
        return {}

    def _delete_path(self, image, rec):
        """Delete the file ``image`` (a layer with no children) in step
        ``delete``; one already gone is no error.

        :raises PathNotAllowed, ImageInUse: a process holds it open.
        """
        path = self._confine(image)
        with rec.step('delete', image=path):
            if not os.path.lexists(path):
                LOG.info('Image %(path)s already gone', {'path': path})
            else:
                self._refuse_if_open(path)
                images.remove(path)

    # -- merge, offline -----------------------------------------------------
    def _merge_operands(self, snapshot, parent, child):
        """The three files of a merge, confined, and checked to be three.

        :returns: ``(snap, parent, child)`` real paths (``parent`` None
            when the snapshot is the root).
        :raises InvalidRequest, PathNotAllowed:
        """
        snap = self._confine(snapshot)
        child = self._confine(child)
        parent = self._confine(parent) if parent else None
        if len({snap, child, parent}) != 3:
            raise exception.InvalidRequest(
                'snapshot, parent and child must be three different images')
        return snap, parent, child

    @staticmethod
    def _streamed_already(snap, parent, child):
        """True if an earlier attempt streamed ``snap`` into ``child``
        and deleted it (its trash is purged now).

        :raises ImageError: ``snap`` is gone but ``child`` still has it
            as backing.
        """
        if os.path.lexists(snap):
            return False
        backing = images.backing_file(child)
        if not same(backing, parent):
            raise exception.ImageError(
                '%s is missing but %s still has backing %s'
                % (snap, child, backing))
        LOG.info('Merge of %(snap)s into %(child)s already done',
                 {'snap': snap, 'child': child})
        images.purge(snap)
        return True

    @staticmethod
    def _cheaper_to_commit(snap, child):
        """True if the child holds less data than the snapshot."""
        return images.actual_size(child) < images.actual_size(snap)

    def _merge_files(self, snap, parent, child, rec, child_is_leaf,
                     live=False, **detail):
        """Merge with ``qemu-img``, no QEMU holding the files: commit the
        leaf ``child`` into ``snap`` when that copies less, else stream
        ``snap`` into ``child``.

        :param live: ``child`` is the disk's path, which keeps the live
            layer: a commit links ``snap``'s file over it.
        :param detail: more detail of the stream's ``merge`` step.
        :returns: ``commit`` or ``stream``, what was done.
        """
        if child_is_leaf and self._cheaper_to_commit(snap, child):
            self._commit_offline(snap, parent, child, rec, live=live)
            return 'commit'
        self._merge_offline(snap, parent, child, rec, **detail)
        return 'stream'

    def _merge_offline(self, snap, parent, child, rec, **detail):
        """Stream ``snap`` into ``child`` (``qemu-img rebase`` onto
        ``parent``), then delete ``snap``.
        """
        self._refuse_if_open(child)
        with rec.step('merge', image=child, onto=parent, **detail):
            backing = images.backing_file(child)
            if same(backing, parent):
                LOG.info('%(child)s already rebased onto %(parent)s',
                         {'child': child, 'parent': parent})
            elif same(backing, snap):
                self._ensure_space(child, images.actual_size(snap),
                                   'the merge')
                images.rebase(child, self._backing_name(child, parent),
                              safe=True)
            else:
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (child, backing, snap))
        with rec.step('reparent', image=child, parent=parent):
            backing = images.backing_file(child)
            if not same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s after rebase, expected %s'
                    % (child, backing, parent))
        with rec.step('delete', image=snap):
            self._refuse_if_open(snap)
            images.remove(snap)
        LOG.info('Merged %(snap)s into %(child)s offline',
                 {'snap': snap, 'child': child})

    #: overlays and rebases name the backing file by its bare name
    #: (issue 20); the libvirt driver does not yet
    relative_backing = False

    def _backing_name(self, image, backing):
        """How ``image``'s header names ``backing``: its bare name when
        ``relative_backing`` and both are in one directory (``qemu-img``
        resolves it against ``image``'s directory).
        """
        if backing and self.relative_backing and \
                os.path.dirname(image) == os.path.dirname(backing):
            return os.path.basename(backing)
        return backing

    def _commit_offline(self, snap, parent, child, rec, live=False):
        """Commit ``child`` into ``snap`` (``qemu-img commit``), then
        delete ``child``: ``snap``'s file stands for it.  ``live``: the
        child's path keeps the live layer; ``snap``'s file is linked over
        it and ``snap``'s name goes.
        """
        self._refuse_if_open(child)
        self._refuse_if_open(snap)
        with rec.step('merge', image=snap, source=child,
                      direction='commit'):
            backing = images.backing_file(child)
            if not same(backing, snap):
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (child, backing, snap))
            self._ensure_space(snap, images.actual_size(child), 'the merge')
            images.commit(child)
        with rec.step('reparent', image=snap, parent=parent):
            backing = images.backing_file(snap)
            if not same(backing, parent):
                raise exception.ImageError(
                    '%s has backing %s, expected %s' % (snap, backing, parent))
        with rec.step('delete', image=child):
            if live:
                images.link_over(snap, child)
                images.remove(snap)
            else:
                images.remove(child)
        LOG.info('Committed %(child)s into %(snap)s offline',
                 {'snap': snap, 'child': child})

    # -- revert -------------------------------------------------------------
    def _prepare_revert(self, snap, new, active, rec):
        """The file work of a revert, once the backend has found the VM
        shut off: the new live layer ``new`` on ``snap``.

        :raises ServerRunning: a process still holds ``active``.
        """
        if active and images.is_locked(active):
            raise exception.ServerRunning(
                '%s is in use by a running process' % active)
        with rec.step('prepare', image=new, backing=snap):
            images.create_overlay(new, snap, exist_ok=True)

    # -- new disks from a snapshot ------------------------------------------
    def clone(self, snapshot, layer_name, mode, rec, progress=None):
        """See base.Driver.clone: ``qemu-img convert -O qcow2`` (flat) or
        a qcow2 overlay on the snapshot's file (linked), beside it; image
        work only, no VM is touched.

        :raises InvalidRequest, PathNotAllowed, ImageError, NoSpace:
        """
        snap = self._confine(snapshot.get('path'))
        new = self._confine(self.layer_locator(snapshot, layer_name)['path'])
        if mode == 'flat' and not os.path.lexists(new):
            self._ensure_space(new, images.actual_size(snap), 'the copy')
        backing = images.clone_layer(snap, new, mode, rec, progress)
        return {'image': self.image(new),
                'backing': self.image(snap) if backing else None,
                'size_bytes': images.actual_size(new)}

    # -- the audit ----------------------------------------------------------
    def inspect(self, locators):
        """See base.Driver.inspect: ``backing`` from the qcow2 header,
        ``check`` by ``qemu-img check`` (skipped for an image a process
        holds for writing: its metadata on disk is stale until QEMU
        flushes); ``files`` are the image directories' regular files and
        symbolic links no locator names (a ``.deleted`` file a purge did
        not unlink, the ``.tmp`` file of an interrupted create, a partial
        overlay, anything else), each with the locator it is a leftover
        of (``x.qcow2.deleted`` of ``x.qcow2``'s), or None.
        """
        result = {'images': [], 'files': []}
        named = {}
        for locator in list(locators or [])[:INSPECT_MAX]:
            info = {'locator': locator, 'exists': False, 'backing': None,
                    'check': None, 'error': None}
            try:
                self.check(locator)
                real = self._confine(locator['path'])
                named[real] = locator
                info['exists'] = os.path.exists(real)
                if info['exists']:
                    backing = images.backing_file(real)
                    info['backing'] = self.image(backing) if backing \
                        else None
                    info['check'] = self._check(real)
            except exception.AgentError as exc:
                info['error'] = str(exc)
            result['images'].append(info)
        for directory in self.image_dirs:
            for root, _dirs, files in os.walk(directory):
                for name in files:
                    path = os.path.join(root, name)
                    if not is_file(path) or \
                            os.path.realpath(path) in named:
                        continue
                    result['files'].append({
                        'path': path,
                        'locator': named.get(os.path.realpath(
                            WORK_SUFFIX.sub('', path)))})
        return result

    @staticmethod
    def _check(path):
        """``ok``, or what ``qemu-img check`` found wrong in ``path``."""
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
            self._delete_path(path, steps.StepRecorder())
        except exception.AgentError as exc:
            return {'removed': False, 'error': str(exc)}
        return {'removed': True, 'error': ''}

    # -- helpers ------------------------------------------------------------
    def _confine(self, path):
        return paths.confine(path, self.image_dirs)

    def _ensure_space(self, target, needed, what):
        """Refuse ``what`` before it starts unless ``target``'s directory
        keeps ``reserved_bytes`` free after writing ``needed`` bytes.

        :raises NoSpace:
        """
        free = images.free_bytes(target)
        if free - needed < self.reserved_bytes:
            raise exception.NoSpace(
                'Not enough space for %s in %s: it needs %.1f MiB, %.1f MiB '
                'are free and %.1f MiB are kept in reserve'
                % (what, os.path.dirname(target), needed / MiB, free / MiB,
                   self.reserved_bytes / MiB))

    @staticmethod
    def _refuse_if_open(path):
        """:raises ImageInUse: a process holds ``path`` open (a lock QEMU
        takes, or any opener ``images.open_by`` finds).
        """
        try:
            locked = images.is_locked(path)
        except exception.ImageError:
            # Not an image QEMU can open (a corrupt or partial leftover):
            # no QEMU holds it; any other opener is found below.
            locked = False
        if locked:
            raise exception.ImageInUse('%s is locked by a running process'
                                       % path, image=path)
        pids = images.open_by(path)
        if pids:
            raise exception.ImageInUse(
                '%s is open by process(es) %s' % (path, pids), image=path)

    @staticmethod
    def _drop_file(new):
        """Remove ``new`` (an overlay a failed switch left) if nothing
        holds it; logs, never raises.
        """
        try:
            if not images.open_by(new) and not images.is_locked(new):
                images.remove(new)
        except exception.AgentError as exc:
            LOG.error('Cannot clean up %(new)s: %(exc)s',
                      {'new': new, 'exc': exc})
