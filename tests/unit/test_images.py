"""agent.images against real qemu-img on temporary files."""

import json
import os
import subprocess
import time

import pytest

from agent import exception
from agent import images

MiB = 1024 * 1024


def write(image, pattern, offset, length=64 * 1024):
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    "write -P 0x%02x %d %d" % (pattern, offset, length),
                    image], check=True, capture_output=True)


def reads(image, pattern, offset, length=64 * 1024):
    proc = subprocess.run(["qemu-io", "-r", "-U", "-f", "qcow2", "-c",
                           "read -P 0x%02x %d %d" % (pattern, offset, length),
                           image], capture_output=True, text=True)
    return (proc.returncode == 0
            and "Pattern verification failed" not in proc.stdout)


@pytest.fixture
def base(tmp_path):
    path = str(tmp_path / "base.qcow2")
    images.create_base(path, 16 * MiB)
    return path


def test_create_base_and_info(base):
    data = images.info(base)
    assert data["format"] == "qcow2"
    assert data["virtual-size"] == 16 * MiB
    assert images.virtual_size(base) == 16 * MiB
    assert images.backing_file(base) is None
    assert images.actual_size(base) > 0
    assert images.check(base)["check-errors"] == 0


def test_create_base_refuses_existing(base):
    with pytest.raises(exception.ImageError):
        images.create_base(base, MiB)


def test_create_overlay(tmp_path, base):
    overlay = str(tmp_path / "o.qcow2")
    images.create_overlay(overlay, base)
    assert images.backing_file(overlay) == base
    assert images.info(overlay)["backing-filename-format"] == "qcow2"
    assert images.virtual_size(overlay) == 16 * MiB
    chain = images.info(overlay, backing_chain=True)
    assert [c["filename"] for c in chain] == [overlay, base]
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_create_overlay_replaces_what_a_killed_attempt_left(tmp_path, base):
    overlay = str(tmp_path / "o.qcow2")
    with open(overlay + ".tmp", "wb") as f:
        f.write(b"half-written by an agent that was killed")
    images.create_overlay(overlay, base)
    assert images.backing_file(overlay) == base
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(base), "o.qcow2"])


def test_create_overlay_existing(tmp_path, base):
    overlay = str(tmp_path / "o.qcow2")
    images.create_overlay(overlay, base)
    with pytest.raises(exception.ImageError, match="overwrite"):
        images.create_overlay(overlay, base)
    images.create_overlay(overlay, base, exist_ok=True)  # same backing: ok
    other = str(tmp_path / "other.qcow2")
    images.create_base(other, 16 * MiB)
    with pytest.raises(exception.ImageError, match="backing"):
        images.create_overlay(overlay, other, exist_ok=True)


def test_create_overlay_missing_backing(tmp_path):
    overlay = str(tmp_path / "o.qcow2")
    with pytest.raises(exception.ImageError, match="nope.qcow2"):
        images.create_overlay(overlay, str(tmp_path / "nope.qcow2"))
    assert os.listdir(tmp_path) == []


def test_info_error_carries_stderr(tmp_path):
    with pytest.raises(exception.ImageError) as err:
        images.info(str(tmp_path / "missing.qcow2"))
    assert "missing.qcow2" in str(err.value)
    assert err.value.code == "image_error"


def test_relative_backing_is_made_absolute(tmp_path, base):
    overlay = str(tmp_path / "rel.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                    "base.qcow2", "-F", "qcow2", overlay], check=True,
                   cwd=str(tmp_path))
    assert images.backing_file(overlay) == base


def test_rebase_safe_keeps_content(tmp_path, base):
    mid = str(tmp_path / "mid.qcow2")
    top = str(tmp_path / "top.qcow2")
    write(base, 0xaa, 0)
    images.create_overlay(mid, base)
    write(mid, 0xbb, 64 * 1024)
    images.create_overlay(top, mid)
    write(top, 0xcc, 128 * 1024)

    images.rebase(top, base)
    assert images.backing_file(top) == base
    os.unlink(mid)
    assert reads(top, 0xaa, 0)
    assert reads(top, 0xbb, 64 * 1024)
    assert reads(top, 0xcc, 128 * 1024)
    images.check(top)


def test_rebase_flatten(tmp_path, base):
    top = str(tmp_path / "top.qcow2")
    write(base, 0xaa, 0)
    images.create_overlay(top, base)
    images.rebase(top, None)
    assert images.backing_file(top) is None
    os.unlink(base)
    assert reads(top, 0xaa, 0)
    assert reads(top, 0x00, 64 * 1024)


def test_check_reports_corruption(tmp_path, base):
    write(base, 0xaa, 0)
    # Point the first L1 entry at a cluster beyond the end of the file.
    header = images.info(base)
    assert header["cluster-size"] == 65536
    with open(base, "r+b") as f:
        f.seek(40)  # l1_table_offset
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        f.write((0x8000000000000000 | (1 << 40)).to_bytes(8, "big"))
    with pytest.raises(exception.ImageError) as err:
        images.check(base)
    assert err.value.kwargs["returncode"] in (1, 2, 3)


def test_remove_is_idempotent(tmp_path, base):
    images.remove(base)
    assert not os.path.exists(base)
    images.remove(base)


def test_unlocked_image(base, tmp_path):
    assert images.is_locked(base) is False
    assert images.is_locked(str(tmp_path / "missing.qcow2")) is False
    assert images.open_by(base) == []


def test_locked_image(base):
    # qemu-io keeps the image open (read-write) while it waits on stdin.
    proc = subprocess.Popen(["qemu-io", "-f", "qcow2", base],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if proc.pid in images.open_by(base):
                break
            proc.poll()
            assert proc.returncode is None
            time.sleep(0.05)
        assert images.is_locked(base) is True
        assert proc.pid in images.open_by(base)
        # -U still reads it
        assert images.info(base, force_share=True)["format"] == "qcow2"
    finally:
        proc.kill()
        proc.wait()
    assert images.is_locked(base) is False


def _corrupt(path):
    """A qcow2 header qemu-img refuses ("Unsupported cluster size")."""
    with open(path, "wb") as f:
        f.write(b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(504))


def test_corrupt_image_in_a_blockstore_is_not_locked(tmp_path):
    """A path containing "block" (and so "lock") must not pass for QEMU's
    lock error: the corruption is raised, and the audit's check fails.
    """
    from agent.driver.qemu import driver as qemu
    directory = tmp_path / "blockstore"
    directory.mkdir()
    path = str(directory / "vda-locked.qcow2")
    _corrupt(path)
    with pytest.raises(exception.ImageError) as err:
        images.is_locked(path)
    assert "lock" in str(err.value)  # the path says so, QEMU does not
    assert qemu.QemuDriver._check(path) != "ok"


def test_image_held_by_a_running_qemu_is_locked(tmp_path):
    """QEMU's real lock message, from a ``-M none`` QEMU holding the image
    with ``-blockdev`` (as the agent's VMs do).
    """
    import tempfile

    from livesnap_tools import testvm
    directory = tmp_path / "blockstore"
    directory.mkdir()
    path = str(directory / "vda.qcow2")
    images.create_base(path, MiB)
    sock = os.path.join(tempfile.mkdtemp(prefix="ls-"), "vm.qmp")
    with testvm.TestVM(path, sock):
        assert images.is_locked(path) is True
        with pytest.raises(exception.ImageError) as err:
            images.info(path)
        assert 'Failed to get shared "write" lock' in str(err.value)
    assert images.is_locked(path) is False


def test_info_json_roundtrip(base):
    assert json.loads(json.dumps(images.info(base)))["filename"] == base


def test_trash_then_purge_is_idempotent(tmp_path):
    path = str(tmp_path / "snap.qcow2")
    images.create_base(path, 1024 * 1024)
    images.trash(path)
    assert not os.path.exists(path)
    assert os.path.exists(path + images.TRASH_SUFFIX)
    images.trash(path)  # already gone: fine
    images.purge(path)
    images.purge(path)
    assert os.listdir(tmp_path) == []


def test_flush_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(exception.ImageError):
        images.flush(str(tmp_path / "missing.qcow2"))
