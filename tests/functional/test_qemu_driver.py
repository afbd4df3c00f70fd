"""The QEMU driver against real ``qemu-system-x86_64 -M none`` VMs.

Data is written through QEMU's block layer (HMP qemu-io) and verified from
outside with qemu-io, so every test checks that snapshots and merges keep
each image's content byte for byte.  No timing assertions: the machines are
loaded.  What every driver must do (create, merge both ways, delete, revert,
clone, groups, quiesce, crash points) is the contract suite's,
tests/functional/test_driver_contract.py; here are the QEMU driver's own
cases (its pause deadline, QMP failures, jobs left behind, a full disk).
"""

import os
import shutil
import subprocess
import tempfile
from unittest import mock

import pytest

from agent.driver.qemu import driver as qemu
from agent.driver.qemu import graph
from agent.driver.qemu import qmp
from agent import exception
from agent import images
from agent.steps import StepRecorder
from livesnap_tools.testvm import read_pattern_ok
from livesnap_tools.testvm import TestVM

pytestmark = pytest.mark.functional

SIZE = 16 * 1024 * 1024
CHUNK = 64 * 1024


class ByPath(object):
    """The QEMU driver's locator methods called by file path, so these
    tests name images as files: a disk is ``{"qmp_socket",
    "active_image"}``, a new layer a ``.qcow2`` path beside the live one,
    and results name files (``snapshot_image``, ``active_image``,
    ``child_image``).  Every call goes through the driver's locators
    (``check``, ``layer_locator``, ``image``).
    """

    def __init__(self, driver):
        self.driver = driver

    def __getattr__(self, name):
        return getattr(self.driver, name)

    def _disk(self, disk):
        return {"driver": self.driver.name,
                "qmp_socket": disk.get("qmp_socket"),
                "path": disk["active_image"]}

    def _image(self, path):
        return self.driver.image(path) if path else None

    def _layer_name(self, disk, new_image):
        name = os.path.basename(new_image)
        if os.path.dirname(new_image) != \
                os.path.dirname(disk["active_image"]) \
                or not name.endswith(".qcow2"):
            # confinement speaks first for a path elsewhere
            self.driver.check(self._image(new_image))
            raise exception.InvalidRequest(
                "%s is not a .qcow2 file beside %s"
                % (new_image, disk["active_image"]))
        return name[:-len(".qcow2")]

    def is_online(self, disk):
        return self.driver.is_online(self._disk(disk))

    def create_snapshot(self, disk, new_image, rec):
        loc = self._disk(disk)
        self.driver.check(loc, "disk")
        result = self.driver.create_snapshot(
            loc, self._layer_name(disk, new_image), rec)
        return {"snapshot_image": result["snapshot"]["path"],
                "active_image": result["disk"]["path"],
                "size_bytes": result["size_bytes"],
                "online": result["online"]}

    def delete_image(self, image, rec):
        self.driver.delete_image(self._image(image), rec)
        return {"image": image, "deleted": True}

    def merge(self, disk, snapshot_image, parent_image, child_image, rec,
              progress=None, child_is_leaf=False, cancelled=None):
        loc = self._disk(disk)
        child = loc if child_image == disk["active_image"] else \
            self._image(child_image)
        result = self.driver.merge(
            loc, self._image(snapshot_image), self._image(parent_image),
            child, rec, progress=progress, child_is_leaf=child_is_leaf,
            cancelled=cancelled)
        return {"child_image": result["child"]["path"],
                "parent_image": parent_image, "online": result["online"],
                "direction": result["direction"]}

    def new_active_image(self, disk, snapshot_image, new_image, rec):
        result = self.driver.revert(
            self._disk(disk), self._image(snapshot_image),
            self._layer_name(disk, new_image), rec)
        return {"active_image": result["disk"]["path"],
                "snapshot_image": snapshot_image, "online": False}


def Qemu(*args, **kwargs):
    """A QEMU driver, called by file path (``ByPath``)."""
    return ByPath(qemu.QemuDriver(*args, **kwargs))


def names(rec):
    return [s["name"] for s in rec.steps]


def offline_write(image, pattern, offset, length=CHUNK):
    subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                    "write -P 0x%02x %d %d" % (pattern, offset, length),
                    image], check=True, capture_output=True)


def assert_content(image, layout):
    """``layout``: list of (pattern, offset) chunks the image must show."""
    for pattern, offset in layout:
        assert read_pattern_ok(image, pattern, offset, CHUNK), (
            "%s does not read 0x%02x at %d" % (image, pattern, offset))


@pytest.fixture
def imgdir(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    return str(d)


@pytest.fixture
def sockdir():
    # unix socket paths are short; pytest's tmp_path may be too long
    d = tempfile.mkdtemp(prefix="ls-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vms(sockdir):
    started = []

    def start(image, name="vm"):
        vm = TestVM(image, os.path.join(sockdir, "%s.sock" % name),
                    name=name)
        started.append(vm)
        return vm.start()

    yield start
    for vm in started:
        vm.kill()


@pytest.fixture
def driver(imgdir):
    return Qemu([imgdir], pause_deadline=30.0, qmp_timeout=30.0,
                           job_poll_interval=0.02)


@pytest.fixture
def base(imgdir):
    path = os.path.join(imgdir, "base.qcow2")
    images.create_base(path, SIZE)
    return path


def img(imgdir, name):
    return os.path.join(imgdir, name + ".qcow2")


def snapshot(driver, disk, new):
    rec = StepRecorder()
    result = driver.create_snapshot(disk, new, rec)
    disk["active_image"] = result["active_image"]
    return result, rec


# -- create ----------------------------------------------------------------


def test_offline_create_on_dead_socket(driver, base, imgdir, sockdir):
    disk = {"qmp_socket": os.path.join(sockdir, "gone.sock"),
            "active_image": base}
    result, rec = snapshot(driver, disk, img(imgdir, "a1"))
    assert result["online"] is False


def test_offline_create_refuses_locked_image(driver, vms, base, imgdir):
    vms(base)
    disk = {"qmp_socket": None, "active_image": base}
    new = img(imgdir, "a1")
    with pytest.raises(exception.ImageInUse):
        driver.create_snapshot(disk, new, StepRecorder())
    assert not os.path.exists(new)


def test_create_refuses_path_outside(driver, base, tmp_path):
    disk = {"qmp_socket": None, "active_image": base}
    with pytest.raises(exception.PathNotAllowed):
        driver.create_snapshot(disk, str(tmp_path / "evil.qcow2"),
                               StepRecorder())


def test_pause_deadline_missed_still_resumes(vms, base, imgdir):
    """The paused section is queued in QEMU in one write, so a deadline
    that its replies miss cannot leave the VM paused: the agent still reads
    the queued cont's answer and keeps the pivot QEMU did.
    """
    strict = Qemu([imgdir], pause_deadline=0, qmp_timeout=30.0)
    vm = vms(base)
    vm.write(0xaa, 0, CHUNK)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    new = img(imgdir, "a1")
    rec = StepRecorder()
    strict.create_snapshot(disk, new, rec)
    assert names(rec) == ["prepare", "pause", "resume"]
    assert rec.steps[1]["status"] == "failed"
    assert "did not answer stop" in rec.steps[1]["error"]
    assert rec.steps[2]["status"] == "done"
    assert not rec.paused
    assert vm.status() == "running"
    assert vm.top_image() == base
    assert_content(new, [(0xaa, 0)])

    # the next snapshot on the same disk works
    ok = Qemu([imgdir], pause_deadline=30.0, qmp_timeout=30.0)
    newer = img(imgdir, "a2")
    snapshot(ok, {"qmp_socket": vm.qmp_socket, "active_image": base}, newer)
    assert vm.top_image() == base
    assert images.backing_file(newer) == new


def test_failed_pivot_is_rolled_back_and_resumed(vms, base, imgdir):
    """A graph change QEMU refuses inside the pause: cont was queued after
    it, so the VM runs; the new node and file are removed afterwards.
    """
    vm = vms(base)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    drv = Qemu([imgdir], pause_deadline=30.0, qmp_timeout=30.0)
    new = img(imgdir, "bad")
    rec = StepRecorder()
    real = qmp.QMPSession.send

    def send(session, commands):
        return real(session, [
            ("blockdev-snapshot", dict(args, overlay="no-such-node"))
            if cmd == "blockdev-snapshot" else (cmd, args)
            for cmd, args in commands])

    with mock.patch.object(qmp.QMPSession, "send", send):
        with pytest.raises(exception.QMPError):
            drv.create_snapshot(disk, new, rec)
    assert names(rec) == ["prepare", "pause", "pivot", "resume"]
    assert rec.steps[2]["status"] == "failed"
    assert rec.steps[3]["status"] == "done"
    assert rec.pause_ms is not None
    assert vm.status() == "running"
    assert not os.path.exists(new)
    assert [n["file"] for n in vm.nodes()] == [base]


# -- delete ----------------------------------------------------------------


# -- merge -----------------------------------------------------------------

def build_online_chain(driver, vm, base, imgdir, count):
    """base <- a1 <- ... <- a<count> (active); image i gets pattern 0x10+i
    at chunk i, and chunk 0 is overwritten in every layer.
    """
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    vm.write(0x10, 0, CHUNK)
    chain = []
    for i in range(1, count + 1):
        new = img(imgdir, "a%d" % i)
        snapshot(driver, disk, new)
        vm.write(0x10 + i, i * CHUNK, CHUNK)
        vm.write(0x10 + i, 0, CHUNK)
        chain.append(new)
    return disk, chain + [base]


def layout_of(chain, index):
    """What image ``chain[index]`` shows (see build_online_chain)."""
    layout = [(0x10 + index, 0)]
    for i in range(1, len(chain) + 1):
        layout.append((0x10 + i if 0 < i <= index else 0x00, i * CHUNK))
    return layout


def settle(vm):
    """stop flushes every node; resume afterwards."""
    vm.stop_vm()
    vm.cont()


def build_offline_chain(driver, base, imgdir, count):
    """As build_online_chain, offline: a1 <- ... <- base (live)."""
    disk = {"qmp_socket": None, "active_image": base}
    offline_write(base, 0x10, 0)
    chain = []
    for i in range(1, count + 1):
        new = img(imgdir, "a%d" % i)
        snapshot(driver, disk, new)
        offline_write(base, 0x10 + i, i * CHUNK)
        offline_write(base, 0x10 + i, 0)
        chain.append(new)
    return disk, chain + [base]


def test_merge_offline_refuses_locked_child(driver, vms, base, imgdir):
    disk, chain = build_offline_chain(driver, base, imgdir, 2)
    vms(chain[2])
    with pytest.raises(exception.ImageInUse):
        driver.merge({"qmp_socket": None, "active_image": chain[2]},
                     chain[1], chain[0], chain[2], StepRecorder())
    assert os.path.exists(chain[1])


def test_merge_resumes_after_interrupted_rebase(driver, base, imgdir):
    """Crash after the rebase, before the delete: a retry only deletes."""
    disk, chain = build_offline_chain(driver, base, imgdir, 2)
    before = layout_of(chain, 2)
    images.rebase(chain[2], chain[0])
    rec = StepRecorder()
    driver.merge(disk, chain[1], chain[0], chain[2], rec)
    assert names(rec) == ["merge", "reparent", "delete"]
    assert not os.path.exists(chain[1])
    assert_content(chain[2], before)


# -- revert ----------------------------------------------------------------


# -- failures --------------------------------------------------------------

def test_resume_failed_when_qemu_dies_while_paused(vms, base, imgdir,
                                                   monkeypatch):
    drv = Qemu([imgdir], pause_deadline=30.0, qmp_timeout=5.0,
                          resume_retries=2)
    vm = vms(base)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    new = img(imgdir, "a1")
    real_send = qmp.QMPSession.send

    def die_then_send(session, commands):
        if commands[0][0] == "stop":
            vm.kill()
        return real_send(session, commands)
    monkeypatch.setattr(qmp.QMPSession, "send", die_then_send)
    rec = StepRecorder()
    with pytest.raises(exception.ResumeFailed):
        drv.create_snapshot(disk, new, rec)
    assert names(rec) == ["prepare", "pause", "resume"]
    assert rec.steps[-1]["status"] == "failed"
    assert rec.paused  # the journal must know the VM may be left paused
    assert not os.path.exists(new)


def test_merge_reuses_a_pending_job(driver, vms, base, imgdir):
    """A crash after block-stream started: the retry adopts the job."""
    vm = vms(base)
    disk, chain = build_online_chain(driver, vm, base, imgdir, 2)
    settle(vm)
    before = layout_of(chain, 2)
    nodes = {n["file"]: n["node-name"] for n in vm.nodes()}
    vm.qmp("block-stream", {"job-id": graph.job_id_for(chain[2]),
                            "device": nodes[chain[2]],
                            "base-node": nodes[chain[0]],
                            "auto-finalize": False, "auto-dismiss": False})
    rec = StepRecorder()
    driver.merge(disk, chain[1], chain[0], chain[2], rec)
    assert names(rec) == ["prepare", "pause", "merge", "resume", "reparent",
                          "delete", "purge"]
    assert vm.qmp("query-jobs") == []
    vm.shutdown()
    assert images.backing_file(chain[2]) == chain[0]
    assert_content(chain[2], before)


def test_merge_after_agent_died_inside_the_pause(driver, vms, base, imgdir):
    """The agent wrote stop, job-finalize and cont, then died: QEMU ran
    them, leaving a finalized job nobody dismissed (QEMU 7.2 crashes if
    asked for its block nodes then).  The retry finds the merge done, the
    VM running, and finishes the delete.
    """
    vm = vms(base)
    disk, chain = build_online_chain(driver, vm, base, imgdir, 2)
    settle(vm)
    before = layout_of(chain, 2)
    nodes = {n["file"]: n["node-name"] for n in vm.nodes()}
    job_id = graph.job_id_for(chain[2])
    vm.qmp("block-stream", {"job-id": job_id, "device": nodes[chain[2]],
                            "base-node": nodes[chain[0]],
                            "auto-finalize": False, "auto-dismiss": False})
    with vm.session() as session:
        while session.job(job_id)["status"] != "pending":
            pass
        ids = session.send([("stop", None),
                            ("job-finalize", {"id": job_id}),
                            ("cont", None)])
        session.reply(ids[0])
        session.reply(ids[2])   # all ran; the agent "dies" here
    rec = StepRecorder()
    driver.merge(disk, chain[1], chain[0], chain[2], rec)
    assert names(rec) == ["reparent", "delete"]
    assert vm.alive() and vm.status() == "running"
    assert vm.qmp("query-jobs") == []
    assert not os.path.exists(chain[1])
    vm.shutdown()
    assert images.backing_file(chain[2]) == chain[0]
    assert_content(chain[2], before)


def test_merge_refuses_when_snapshot_lost(driver, base, imgdir):
    disk, chain = build_offline_chain(driver, base, imgdir, 2)
    os.unlink(chain[1])
    with pytest.raises(exception.ImageError, match="missing"):
        driver.merge(disk, chain[1], chain[0], chain[2], StepRecorder())


def test_merge_refuses_wrong_child(driver, base, imgdir):
    disk, chain = build_offline_chain(driver, base, imgdir, 2)
    # a2's backing is a1, not base: base is not a2's parent snapshot
    with pytest.raises(exception.ImageError, match="backing"):
        driver.merge(disk, chain[0], None, chain[2], StepRecorder())
    assert os.path.exists(chain[0])


# -- a full image directory -----------------------------------------------

@pytest.fixture
def small_imgdir(tmp_path):
    """An image directory on a 24 MiB filesystem of its own (tmpfs)."""
    d = tmp_path / "small"
    d.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m",
                           "tmpfs", str(d)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % proc.stderr.strip())
    yield str(d)
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _fill_snapshot(vm, mib):
    """Write ``mib`` MiB into the VM's live layer."""
    for i in range(mib):
        vm.write(0x40 + i, i * 1024 * 1024, 1024 * 1024)
    vm.flush()


def test_merge_refused_before_it_starts_without_room(vms, small_imgdir):
    base = img(small_imgdir, "base")
    images.create_base(base, 64 * 1024 * 1024)
    drv = Qemu([small_imgdir], pause_deadline=30.0,
                          qmp_timeout=30.0, reserved_bytes=4 * 1024 * 1024)
    vm = vms(base)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    snapshot(drv, disk, img(small_imgdir, "a1"))
    _fill_snapshot(vm, 12)
    snapshot(drv, disk, img(small_imgdir, "a2"))
    rec = StepRecorder()
    # a1 <- a2 (12 MiB) <- base (live)
    with pytest.raises(exception.NoSpace, match="needs 1[23]"):
        drv.merge(disk, img(small_imgdir, "a2"), img(small_imgdir, "a1"),
                  base, rec)
    assert rec.steps == []
    assert vm.status() == "running"
    assert vm.qmp("query-jobs") == []
    assert vm.top_image() == base
    # a create that would leave less than the reserve is refused too
    tight = Qemu([small_imgdir], reserved_bytes=64 * 1024 * 1024)
    with pytest.raises(exception.NoSpace):
        tight.create_snapshot(disk, img(small_imgdir, "a3"), StepRecorder())
    assert not os.path.exists(img(small_imgdir, "a3"))


def test_merge_that_runs_out_of_space_leaves_everything_as_it_was(
        vms, small_imgdir, monkeypatch):
    """ENOSPC in the middle of the copy: the job fails with "no space", the
    VM runs, the chain and the data are as before, and the same merge
    succeeds once there is room again.
    """
    base = img(small_imgdir, "base")
    images.create_base(base, 64 * 1024 * 1024)
    drv = Qemu([small_imgdir], pause_deadline=30.0,
                          qmp_timeout=30.0)
    vm = vms(base)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    a1, a2 = img(small_imgdir, "a1"), img(small_imgdir, "a2")
    snapshot(drv, disk, a1)
    _fill_snapshot(vm, 9)
    snapshot(drv, disk, a2)
    vm.write(0x33, 20 * 1024 * 1024, CHUNK)
    settle(vm)
    ballast = os.path.join(small_imgdir, "ballast")
    with open(ballast, "wb") as f:   # leave about 4 MiB free
        f.write(b"\0" * (images.free_bytes(small_imgdir) - 4 * 1024 * 1024))
    monkeypatch.setattr(drv.driver, "_ensure_space", lambda *a: None)
    rec = StepRecorder()
    # a1 <- a2 (9 MiB) <- base (live)
    with pytest.raises(exception.NoSpace, match="No space left"):
        drv.merge(disk, a2, a1, base, rec)
    assert vm.status() == "running"
    assert vm.qmp("query-jobs") == []
    assert vm.top_image() == base
    assert images.backing_file(base) == a2
    assert images.backing_file(a2) == a1
    settle(vm)
    for path in (base, a1, a2):
        images.check(path, force_share=True)
    os.unlink(ballast)
    drv.merge(disk, a2, a1, base, StepRecorder())
    assert vm.top_image() == base and not os.path.exists(a2)
    settle(vm)
    for i in range(9):
        assert read_pattern_ok(base, 0x40 + i, i * 1024 * 1024, 1024 * 1024)
    assert read_pattern_ok(base, 0x33, 20 * 1024 * 1024, CHUNK)


def test_list_vms_finds_a_qemu_by_its_qmp_socket(driver, vms, base, imgdir):
    vm = vms(base, name="listed")
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    snapshot(driver, disk, img(imgdir, "l1"))
    found = [v for v in driver.list_vms()
             if any(d["locator"]["qmp_socket"] == vm.qmp_socket
                    for d in v["disks"])]
    assert len(found) == 1, driver.list_vms()
    assert found[0]["running"] is True
    # the live layer keeps the registered path (issue 20)
    assert [d["locator"] for d in found[0]["disks"]] == [
        {"driver": "qemu", "qmp_socket": vm.qmp_socket, "path": base}]


BIG = 1024 * 1024   # data only the snapshot holds, at offset 2 MiB


def build_big_snapshot_chain(driver, vm, base, imgdir):
    """a1 <- a2 (holds BIG bytes more) <- base (active, little data)."""
    disk, chain = build_online_chain(driver, vm, base, imgdir, 1)
    vm.write(0x77, 2 * BIG, BIG)
    new = img(imgdir, "a2")
    snapshot(driver, disk, new)
    vm.write(0x12, 2 * CHUNK, CHUNK)
    vm.write(0x12, 0, CHUNK)
    return disk, [chain[0], new, chain[1]]


def test_commit_after_the_owner_restarted_the_vm(driver, vms, base, imgdir):
    """Issue 20's restart bug: after two snapshots the VM's owner quits
    QEMU and starts it again with its original command line on the live
    layer, so QEMU opens the snapshots itself from the image headers
    (``#block`` nodes).  Deleting the snapshot right under the live image
    (the live layer the smaller side: a commit) must keep the chain open in
    QEMU; a write and a create work afterwards.
    """
    vm = vms(base)
    disk, chain = build_big_snapshot_chain(driver, vm, base, imgdir)
    vm.shutdown()
    vm = vms(base)   # the same command line, on the live layer
    assert any(n["node-name"].startswith("#") for n in vm.nodes())
    before = layout_of(chain, 2)
    assert images.actual_size(chain[2]) < images.actual_size(chain[1])

    rec = StepRecorder()
    result = driver.merge(disk, chain[1], chain[0], chain[2], rec,
                          child_is_leaf=True)
    assert result["direction"] == "commit"
    assert result["child_image"] == base
    assert vm.top_image() == base
    assert sorted(n["file"] for n in vm.nodes()) == \
        sorted([chain[0], base])
    assert vm.qmp("query-jobs") == []
    assert not os.path.exists(chain[1])

    vm.write(0x99, 3 * BIG, CHUNK)   # the VM writes on
    new = img(imgdir, "a3")
    snapshot(driver, disk, new)
    assert vm.top_image() == base
    vm.write(0x33, 4 * BIG, CHUNK)
    vm.shutdown()
    assert_content(new, before)
    assert read_pattern_ok(new, 0x77, 2 * BIG, BIG)
    assert read_pattern_ok(new, 0x99, 3 * BIG, CHUNK)
    assert read_pattern_ok(new, 0x00, 4 * BIG, CHUNK)
    assert_content(base, before + [(0x33, 4 * BIG)])
    assert read_pattern_ok(base, 0x99, 3 * BIG, CHUNK)
    assert_content(chain[0], layout_of(chain, 0))
    for path in (chain[0], new, base):
        images.check(path)


def _frozen_copy(image, tmp_path):
    """A flat copy of what ``image`` shows now, for qemu-img compare."""
    ref = str(tmp_path / ("ref-" + os.path.basename(image)))
    subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", image, ref],
                   check=True, capture_output=True)
    return ref


def _same_content(image, ref):
    proc = subprocess.run(["qemu-img", "compare", "-U", image, ref],
                          capture_output=True, text=True)
    return proc.returncode == 0


def test_the_owner_restarts_the_vm_twice(driver, vms, base, imgdir,
                                         tmp_path):
    """Issue 20: the VM's owner starts QEMU again from its own command line
    (the registered path ``base``) twice, with a create, a merge in each
    direction and a revert in between.  After each restart the VM sees its
    newest data, every snapshot keeps exactly its own, and livesnap goes on
    without an operator step.
    """
    vm = vms(base)
    disk = {"qmp_socket": vm.qmp_socket, "active_image": base}
    vm.write(0x01, 0, CHUNK)
    s1 = img(imgdir, "s1")
    snapshot(driver, disk, s1)
    vm.write(0x02, CHUNK, CHUNK)
    s2 = img(imgdir, "s2")
    snapshot(driver, disk, s2)
    vm.write(0x03, 2 * CHUNK, CHUNK)
    settle(vm)
    refs = {s1: _frozen_copy(s1, tmp_path), s2: _frozen_copy(s2, tmp_path)}
    newest = [(0x01, 0), (0x02, CHUNK), (0x03, 2 * CHUNK)]

    # -- restart 1: QEMU opens the chain from the headers
    vm.shutdown()
    vm = vms(base)
    assert vm.top_image() == base
    assert_content(base, newest)
    for snap, ref in refs.items():
        assert _same_content(snap, ref), snap

    # a stream: s2 into the live layer
    result = driver.merge(disk, s2, s1, base, StepRecorder())
    assert result["direction"] == "stream"
    assert not os.path.exists(s2)
    del refs[s2]
    vm.write(0x04, 3 * CHUNK, CHUNK)
    vm.write(0x77, 2 * BIG, BIG)
    newest += [(0x04, 3 * CHUNK)]
    # a create
    s3 = img(imgdir, "s3")
    snapshot(driver, disk, s3)
    settle(vm)
    refs[s3] = _frozen_copy(s3, tmp_path)
    vm.write(0x05, 4 * CHUNK, CHUNK)
    newest += [(0x05, 4 * CHUNK)]
    # a commit: the live layer (little data) into s3 (1 MiB more)
    result = driver.merge(disk, s3, s1, base, StepRecorder(),
                          child_is_leaf=True)
    assert result["direction"] == "commit"
    assert result["child_image"] == base
    assert not os.path.exists(s3)
    del refs[s3]
    vm.write(0x06, 5 * CHUNK, CHUNK)
    newest += [(0x06, 5 * CHUNK)]
    s4 = img(imgdir, "s4")
    snapshot(driver, disk, s4)
    settle(vm)
    refs[s4] = _frozen_copy(s4, tmp_path)
    vm.write(0x07, 6 * CHUNK, CHUNK)
    newest += [(0x07, 6 * CHUNK)]

    # -- restart 2
    vm.shutdown()
    vm = vms(base)
    assert vm.top_image() == base
    assert_content(base, newest)
    assert read_pattern_ok(base, 0x77, 2 * BIG, BIG)
    for snap, ref in refs.items():
        assert _same_content(snap, ref), snap
    assert images.info(base, force_share=True)["backing-filename"] == \
        "s4.qcow2"
    assert images.info(s4, force_share=True)["backing-filename"] == \
        "s1.qcow2"

    # a revert (the owner shuts the VM off first), then the owner starts
    # it again on the same path: it sees s1
    vm.shutdown()
    driver.new_active_image(disk, s1, img(imgdir, "r1"), StepRecorder())
    vm = vms(base)
    assert vm.top_image() == base
    assert_content(base, [(0x01, 0), (0x00, CHUNK), (0x00, 2 * CHUNK)])
    vm.write(0x08, 0, CHUNK)
    s5 = img(imgdir, "s5")
    snapshot(driver, disk, s5)
    vm.write(0x09, CHUNK, CHUNK)
    vm.shutdown()
    assert_content(s5, [(0x08, 0), (0x00, CHUNK)])
    assert_content(base, [(0x08, 0), (0x09, CHUNK)])
    for snap, ref in refs.items():
        assert _same_content(snap, ref), snap
    for path in (s1, s4, s5, base):
        images.check(path)
