"""Thin, safe wrappers over ``qemu-img``.

Every call runs ``qemu-img`` with an argument list (never a shell), a
timeout, and turns a failure into :class:`agent.exception.ImageError` carrying
qemu-img's own message.  Paths are expected to be confined already (see
:mod:`agent.paths`); this module does not decide policy.
"""

import errno
import json
import logging
import os
import re
import subprocess

from agent import exception
from agent import qcow2

LOG = logging.getLogger(__name__)

QEMU_IMG = "qemu-img"
#: seconds for metadata operations (create, info, check)
DEFAULT_TIMEOUT = 60
#: seconds for operations that copy data (rebase)
COPY_TIMEOUT = 6 * 3600


#: how qemu-img and QEMU's block jobs say ENOSPC
NO_SPACE = "No space left on device"


def _run(args, timeout=DEFAULT_TIMEOUT, ok_codes=(0,)):
    """Run ``qemu-img ARGS``; return the CompletedProcess.

    :raises ImageError: on a non-accepted exit status, a timeout or a missing
        binary.
    """
    cmd = [QEMU_IMG] + list(args)
    LOG.debug("Running %(cmd)s", {"cmd": cmd})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise exception.ImageError(
            "%s timed out after %s s" % (" ".join(cmd), timeout))
    except OSError as exc:
        raise exception.ImageError("Cannot run %s: %s" % (QEMU_IMG, exc))
    if proc.returncode not in ok_codes:
        if NO_SPACE in proc.stderr:
            raise exception.NoSpace(
                "No space left for %s: %s" % (" ".join(args[:1]),
                                              proc.stderr.strip()))
        raise exception.ImageError(
            "%s failed (exit %d): %s" % (" ".join(cmd), proc.returncode,
                                         proc.stderr.strip()),
            returncode=proc.returncode, stderr=proc.stderr)
    return proc


def free_bytes(path):
    """Bytes an unprivileged writer may still use on ``path``'s
    filesystem.
    """
    st = os.statvfs(path if os.path.isdir(path) else os.path.dirname(path))
    return st.f_bavail * st.f_frsize


def _same_file(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


def create_base(path, size):
    """Create a fresh qcow2 image with no backing file (tests and tools).

    :param size: virtual size in bytes (int) or a qemu-img size string.
    """
    if os.path.lexists(path):
        raise exception.ImageError("Refusing to overwrite %s" % path)
    _run(["create", "-q", "-f", "qcow2", path, str(size)])
    LOG.info("Created base image %(path)s of size %(size)s",
             {"path": path, "size": size})


def _write_overlay(path, backing):
    """Write ``path`` as an empty overlay on ``backing``: in-process when
    the layout allows (``agent.qcow2``, the bytes qemu-img would write, no
    process to spawn), else with ``qemu-img create``.
    """
    try:
        qcow2.write_overlay(path, backing)
        return
    except qcow2.Unsupported as exc:
        LOG.debug("Overlay %(path)s made by qemu-img: %(why)s",
                  {"path": path, "why": exc})
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise exception.NoSpace("No space left for %s: %s"
                                    % (path, exc))
        raise exception.ImageError("Cannot create %s on %s: %s"
                                   % (path, backing, exc))
    _run(["create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2",
          path])


def create_overlay(path, backing, exist_ok=False):
    """Create ``path`` as a qcow2 overlay on ``backing`` (absolute path).

    The image is created under a temporary name and linked into place, so a
    crash never leaves a half-written file at ``path``.

    :param exist_ok: if ``path`` already exists and is an overlay on exactly
        ``backing``, succeed without doing anything (idempotent retry).
    :raises ImageError: if ``path`` exists otherwise, or qemu-img fails.
    """
    if os.path.lexists(path):
        if exist_ok:
            current = backing_file(path)
            if current is not None and _same_file(current, backing):
                LOG.debug("Overlay %(path)s on %(backing)s already exists",
                          {"path": path, "backing": backing})
                return
            raise exception.ImageError(
                "%s exists with backing file %s, not %s"
                % (path, current, backing))
        raise exception.ImageError("Refusing to overwrite %s" % path)
    # One name per target, not per process: a retry after a crash (by a new
    # agent process) finds and replaces what the killed one left.  Only one
    # operation at a time works on a disk, so nothing else writes it.
    tmp = "%s.tmp" % path
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        _write_overlay(tmp, backing)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise exception.ImageError(
                "%s appeared while it was being created" % path)
        except OSError as exc:
            raise exception.ImageError("Cannot create %s: %s" % (path, exc))
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    LOG.info("Created overlay %(path)s on %(backing)s",
             {"path": path, "backing": backing})


def _fsync_dir(path):
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def link(src, dst):
    """Give ``src``'s file the second name ``dst`` (a hard link) and make
    it durable; ``dst`` already naming ``src``'s file is fine.

    :raises ImageError: ``dst`` names another file.
    """
    try:
        os.link(src, dst)
    except FileExistsError:
        if not os.path.samefile(src, dst):
            raise exception.ImageError(
                "%s exists and is not %s" % (dst, src))
    except OSError as exc:
        raise exception.ImageError("Cannot link %s to %s: %s"
                                   % (src, dst, exc))
    _fsync_dir(dst)


def link_over(src, dst):
    """Make ``dst`` name ``src``'s file, atomically: ``link(src,
    dst.tmp)``, ``rename(dst.tmp, dst)``, fsync of the directory.  What
    ``dst`` named before loses that name (docs/lifecycle.md).
    """
    tmp = "%s.tmp" % dst
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(src, tmp)
        os.rename(tmp, dst)
    except OSError as exc:
        raise exception.ImageError("Cannot link %s over %s: %s"
                                   % (src, dst, exc))
    _fsync_dir(dst)
    LOG.info("%(dst)s now names %(src)s's file", {"src": src, "dst": dst})


def replace_with_overlay(path, backing):
    """Make ``path`` an empty qcow2 overlay on ``backing`` (a file in the
    same directory), atomically: written as ``path.tmp``, fsynced, renamed
    over ``path``.  The header names the backing file by its bare name, so
    the chain resolves after a restart and after the directory is moved
    as a whole.  What ``path`` named before loses that name.

    :raises ImageError, NoSpace:
    """
    if os.path.dirname(os.path.abspath(path)) != \
            os.path.dirname(os.path.abspath(backing)):
        raise exception.ImageError("%s and %s are not in one directory"
                                   % (path, backing))
    name = os.path.basename(backing)
    tmp = "%s.tmp" % path
    if os.path.lexists(tmp):
        os.unlink(tmp)
    try:
        data = qcow2.overlay_bytes(name, qcow2.backing_virtual_size(backing))
    except qcow2.Unsupported as exc:
        LOG.debug("Overlay %(path)s made by qemu-img: %(why)s",
                  {"path": path, "why": exc})
        _run(["create", "-q", "-f", "qcow2", "-b", name, "-F", "qcow2",
              tmp])
    else:
        try:
            with open(tmp, "xb") as f:
                f.write(data)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise exception.NoSpace("No space left for %s: %s"
                                        % (path, exc))
            raise exception.ImageError("Cannot create %s on %s: %s"
                                       % (path, backing, exc))
    flush(tmp)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        raise exception.ImageError("Cannot rename %s to %s: %s"
                                   % (tmp, path, exc))
    _fsync_dir(path)
    LOG.info("%(path)s is now an empty overlay on %(name)s",
             {"path": path, "name": name})


def info(path, force_share=False, backing_chain=False):
    """Return ``qemu-img info --output=json`` as a dict (a list of dicts
    with ``backing_chain=True``).

    :param force_share: open with ``-U`` (read-only, ignores QEMU's lock;
        metadata of an image a running QEMU writes may be stale).
    """
    args = ["info", "--output=json"]
    if force_share:
        args.append("-U")
    if backing_chain:
        args.append("--backing-chain")
    args.append(path)
    out = _run(args).stdout
    try:
        return json.loads(out)
    except ValueError as exc:
        raise exception.ImageError(
            "Cannot parse qemu-img info output for %s: %s" % (path, exc))


def backing_file(path, force_share=True):
    """Return the absolute path of the backing file of ``path``, or None."""
    data = info(path, force_share=force_share)
    full = data.get("full-backing-filename")
    name = full or data.get("backing-filename")
    if not name:
        return None
    if not os.path.isabs(name):
        name = os.path.join(os.path.dirname(os.path.abspath(path)), name)
    return os.path.normpath(name)


def actual_size(path):
    """Bytes the image occupies on disk."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError as exc:
        raise exception.ImageError("Cannot stat %s: %s" % (path, exc))


def virtual_size(path):
    """Guest-visible size of the image in bytes."""
    return int(info(path, force_share=True)["virtual-size"])


# QEMU's own words (block/file-posix.c), checked with QEMU 7.2:
#   Could not open 'IMG': Failed to get shared "write" lock
#   Is another process using the image [IMG]?
# and 'Failed to get "write" lock' when it asks for the permission itself.
_LOCK_ERROR = re.compile(r'Failed to get (?:shared )?"[a-z ]+" lock')


def is_locked(path):
    """True if some process (QEMU) holds ``path`` open for writing.

    Probes with ``qemu-img info`` without ``-U``: it fails with QEMU's lock
    error (``Failed to get shared "write" lock``) while a writer holds the
    image.  Any other failure (a corrupt image, whatever its path says) is
    raised.  A QEMU that holds the image only as a read-only backing node
    does not lock it; see :func:`open_by`.  A missing file is not locked.

    :raises ImageError: if ``qemu-img info`` fails for another reason.
    """
    if not os.path.lexists(path):
        return False
    try:
        _run(["info", "--output=json", path])
    except exception.ImageError as exc:
        stderr = exc.kwargs.get("stderr") or str(exc)
        # The path is quoted in the message; it must not decide.
        if _LOCK_ERROR.search(stderr.replace(path, "")):
            return True
        raise
    return False


def open_by(path):
    """Return the pids of processes that have ``path`` open (any mode).

    Scans ``/proc/*/fd``; catches read-only opens (backing nodes) that
    :func:`is_locked` cannot see.  Processes we may not inspect are skipped.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = os.path.join("/proc", entry, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                fst = os.stat(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if fst.st_ino == st.st_ino and fst.st_dev == st.st_dev:
                pids.append(int(entry))
                break
    return pids


def check(path, force_share=False):
    """Return ``qemu-img check --output=json`` as a dict.

    :raises ImageError: if the image is corrupt, leaks clusters, or the check
        could not complete.
    """
    args = ["check", "--output=json"]
    if force_share:
        args.append("-U")
    args.append(path)
    proc = _run(args, timeout=COPY_TIMEOUT, ok_codes=(0, 1, 2, 3))
    try:
        result = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        result = {}
    if proc.returncode != 0:
        raise exception.ImageError(
            "qemu-img check %s failed (exit %d): %s %s"
            % (path, proc.returncode, proc.stderr.strip(),
               json.dumps(result, sort_keys=True)),
            returncode=proc.returncode, result=result)
    return result


def rebase(path, backing, safe=True):
    """Point ``path`` at ``backing`` (None: no backing, i.e. flatten).

    In safe mode qemu-img copies into ``path`` every cluster whose content
    differs between the old and the new backing chain, so what ``path``
    shows is unchanged.  The old backing chain must still be readable.
    """
    args = ["rebase", "-f", "qcow2"]
    if not safe:
        args.append("-u")
    if backing is None:
        args += ["-b", ""]
    else:
        args += ["-b", backing, "-F", "qcow2"]
    args.append(path)
    _run(args, timeout=COPY_TIMEOUT)
    LOG.info("Rebased %(path)s onto %(backing)s (safe=%(safe)s)",
             {"path": path, "backing": backing or "nothing", "safe": safe})


def commit(path):
    """Write ``path``'s data into its backing file (``qemu-img commit``).

    Afterwards the backing file shows what ``path`` showed; ``path`` is left
    as it was (``-d``: not emptied, since the caller deletes it).  Safe to
    repeat: committing the same data again changes nothing.
    """
    _run(["commit", "-f", "qcow2", "-d", path], timeout=COPY_TIMEOUT)
    LOG.info("Committed %(path)s into its backing file", {"path": path})


def remove(path):
    """Delete ``path``; a missing file is fine (idempotent)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise exception.ImageError("Cannot remove %s: %s" % (path, exc))
    LOG.info("Removed image %(path)s", {"path": path})


def flush(path):
    """Write ``path``'s dirty pages to disk (fsync through a new fd).

    Called just before pausing a VM: QEMU's ``stop`` flushes every image,
    and whatever the guest or a block job has written since the last flush
    is then written back inside the pause.  Flushing first, while the VM
    runs, leaves ``stop`` only the last few writes.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise exception.ImageError("Cannot open %s: %s" % (path, exc))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TRASH_SUFFIX = ".deleted"


def trash(path):
    """Take ``path`` out of the image directory's qcow2 files at once.

    Renaming is instant whatever the file's size, while unlinking a large
    file can take a long time (freeing and discarding its blocks); the
    rename happens inside a pause, the unlink (``purge``) after it.
    Renaming is safe only for a file no process holds open.
    """
    try:
        os.rename(path, path + TRASH_SUFFIX)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise exception.ImageError("Cannot remove %s: %s" % (path, exc))


def purge(path):
    """Unlink what ``trash(path)`` left (idempotent)."""
    remove(path + TRASH_SUFFIX)


#: ``qemu-img convert -p``'s progress lines: ``    (12.34/100%)``
_PROGRESS = re.compile(r"\((\d+(?:\.\d+)?)/100%\)")


def convert(src, dst, progress=None, timeout=COPY_TIMEOUT):
    """Copy what ``src`` shows (its whole backing chain) into ``dst``, a
    new qcow2 image with no backing file (``qemu-img convert -O qcow2``).

    The copy is written under ``dst.tmp`` and renamed into place, so a
    crash never leaves a half-written ``dst``; a ``dst`` already there is
    the finished copy of an earlier attempt and is kept.

    :param progress: optional callable(percent), fed from ``-p``.
    :raises ImageError, NoSpace:
    """
    if os.path.lexists(dst):
        LOG.debug("%(dst)s already copied", {"dst": dst})
        return
    tmp = "%s.tmp" % dst
    if os.path.lexists(tmp):
        os.unlink(tmp)
    cmd = [QEMU_IMG, "convert", "-p", "-f", "qcow2", "-O", "qcow2", src,
           tmp]
    LOG.debug("Running %(cmd)s", {"cmd": cmd})
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise exception.ImageError("Cannot run %s: %s" % (QEMU_IMG, exc))
    try:
        buf = b""
        while True:
            chunk = proc.stdout.read1(256)
            if not chunk:
                break
            buf = (buf + chunk)[-256:]
            found = _PROGRESS.findall(buf.decode("ascii", "replace"))
            if found and progress is not None:
                progress(min(float(found[-1]), 99.9))
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise exception.ImageError("qemu-img convert timed out after %s s"
                                   % timeout)
    finally:
        proc.stdout.close()
        proc.stderr.close()
    if proc.returncode != 0:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if NO_SPACE in stderr:
            raise exception.NoSpace("No space left for convert: %s"
                                    % stderr.strip())
        raise exception.ImageError(
            "%s failed (exit %d): %s" % (" ".join(cmd), proc.returncode,
                                         stderr.strip()),
            returncode=proc.returncode, stderr=stderr)
    os.rename(tmp, dst)
    if progress is not None:
        progress(100.0)
    LOG.info("Copied %(src)s into %(dst)s (no backing)",
             {"src": src, "dst": dst})


def clone_layer(snap, new, mode, rec, progress=None):
    """Make ``new`` from the layer ``snap`` (both confined paths), the
    work of ``Driver.clone`` for the file-based drivers: ``flat`` copies
    what ``snap`` shows into a standalone image (step ``copy``),
    ``linked`` puts an empty overlay on it (step ``prepare``).
    Idempotent.

    :returns: the backing file of ``new`` (None for ``flat``).
    :raises ImageError, NoSpace:
    """
    if mode == "linked":
        with rec.step("prepare", image=new, backing=snap):
            create_overlay(new, snap, exist_ok=True)
        return snap
    if mode != "flat":
        raise exception.InvalidRequest("Unknown clone mode %r" % (mode,))
    with rec.step("copy", image=new, source=snap):
        convert(snap, new, progress=progress)
    if backing_file(new) is not None:
        raise exception.ImageError("%s is not standalone" % new)
    return None
