"""agent.paths.confine: only real paths inside the image directories pass."""

import os

from hypothesis import given
from hypothesis import strategies as st
import pytest

from agent import exception
from agent import paths


@pytest.fixture
def dirs(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    return str(images), str(other)


def test_existing_file_inside(dirs):
    images, _ = dirs
    path = os.path.join(images, "a.qcow2")
    open(path, "w").close()
    assert paths.confine(path, [images]) == os.path.realpath(path)


def test_missing_file_inside_is_ok(dirs):
    images, _ = dirs
    path = os.path.join(images, "new.qcow2")
    assert paths.confine(path, [images]) == os.path.realpath(path)


def test_subdirectory_inside(dirs):
    images, _ = dirs
    os.mkdir(os.path.join(images, "sub"))
    path = os.path.join(images, "sub", "x.qcow2")
    assert paths.confine(path, [images]) == os.path.realpath(path)


def test_second_image_dir(dirs):
    images, other = dirs
    path = os.path.join(other, "b.qcow2")
    assert paths.confine(path, [images, other]) == os.path.realpath(path)


@pytest.mark.parametrize("bad", [
    "relative.qcow2", "./x.qcow2", "", b"/bytes/path", None, 42,
])
def test_refuses_non_absolute_or_non_str(dirs, bad):
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(bad, [dirs[0]])


def test_refuses_dotdot(dirs):
    images, _ = dirs
    with pytest.raises(exception.PathNotAllowed, match=r"\.\."):
        paths.confine(os.path.join(images, "..", "images", "x.qcow2"),
                      [images])


def test_refuses_nul(dirs):
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(os.path.join(dirs[0], "a\0b"), [dirs[0]])


def test_refuses_outside(dirs):
    images, other = dirs
    with pytest.raises(exception.PathNotAllowed, match="outside"):
        paths.confine(os.path.join(other, "x.qcow2"), [images])
    with pytest.raises(exception.PathNotAllowed):
        paths.confine("/etc/passwd", [images])


def test_refuses_sibling_with_common_prefix(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    sibling = tmp_path / "img2"
    sibling.mkdir()
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(str(sibling / "x.qcow2"), [str(images)])


def test_refuses_the_directory_itself(dirs):
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(dirs[0], [dirs[0]])
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(dirs[0] + "/", [dirs[0]])


def test_refuses_symlink_escape(dirs):
    images, other = dirs
    target = os.path.join(other, "secret.qcow2")
    open(target, "w").close()
    link = os.path.join(images, "link.qcow2")
    os.symlink(target, link)
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(link, [images])


def test_refuses_dangling_symlink_escape(dirs):
    images, other = dirs
    link = os.path.join(images, "dangling.qcow2")
    os.symlink(os.path.join(other, "not-yet.qcow2"), link)
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(link, [images])


def test_refuses_symlinked_parent_escape(dirs):
    images, other = dirs
    os.symlink(other, os.path.join(images, "escape"))
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(os.path.join(images, "escape", "new.qcow2"), [images])


def test_symlink_inside_is_resolved(dirs):
    images, _ = dirs
    target = os.path.join(images, "real.qcow2")
    open(target, "w").close()
    link = os.path.join(images, "alias.qcow2")
    os.symlink(target, link)
    assert paths.confine(link, [images]) == os.path.realpath(target)


def test_image_dir_given_through_symlink(tmp_path, dirs):
    images, _ = dirs
    alias = str(tmp_path / "alias")
    os.symlink(images, alias)
    path = os.path.join(images, "x.qcow2")
    assert paths.confine(path, [alias]) == os.path.realpath(path)


def test_no_image_dirs_refuses_everything(dirs):
    with pytest.raises(exception.PathNotAllowed):
        paths.confine(os.path.join(dirs[0], "x.qcow2"), [])


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "c.qcow2"]),
                min_size=1, max_size=6))
def test_result_always_inside(tmp_path_factory, parts):
    base = os.path.realpath(str(tmp_path_factory.getbasetemp()))
    images = os.path.join(base, "prop-images")
    os.makedirs(images, exist_ok=True)
    path = os.path.join(images, *parts)
    try:
        real = paths.confine(path, [images])
    except exception.PathNotAllowed:
        return
    assert ".." not in parts
    assert real.startswith(images + os.sep)
