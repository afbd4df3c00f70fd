"""The in-process qcow2 overlay writer against ``qemu-img create``."""

import os
import subprocess

import pytest

from agent import images
from agent import qcow2


def _qemu_img(*args):
    subprocess.run(['qemu-img'] + list(args), check=True,
                   capture_output=True)


@pytest.mark.parametrize('size', ['512', '1M', '1000000000', '1G', '10G',
                                  '3T', '4T'])
def test_the_same_bytes_as_qemu_img(tmp_path, size):
    base = str(tmp_path / ('base-%s.qcow2' % size))
    _qemu_img('create', '-q', '-f', 'qcow2', base, size)
    ref = str(tmp_path / 'ref.qcow2')
    mine = str(tmp_path / 'mine.qcow2')
    _qemu_img('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', ref)
    qcow2.write_overlay(mine, base)
    with open(ref, 'rb') as a, open(mine, 'rb') as b:
        assert a.read() == b.read()
    _qemu_img('check', '-q', mine)


def test_what_it_writes_reads_through_to_the_backing(tmp_path):
    base = str(tmp_path / 'base.qcow2')
    _qemu_img('create', '-q', '-f', 'qcow2', base, '4M')
    _qemu_io('-c', 'write -P 0x5a 0 64k', base)
    top = str(tmp_path / 'top.qcow2')
    qcow2.write_overlay(top, base)
    _qemu_io('-c', 'write -P 0x11 64k 64k', top)
    _qemu_io('-c', 'read -P 0x5a 0 64k', '-c',
              'read -P 0x11 64k 64k', top)
    assert images.backing_file(top) == base
    assert images.virtual_size(top) == 4 * 1024 * 1024


def _qemu_io(*args):
    subprocess.run(['qemu-io'] + list(args), check=True,
                   capture_output=True)


def test_refuses_what_the_layout_does_not_cover(tmp_path):
    raw = tmp_path / 'raw.img'
    raw.write_bytes(b'\0' * 4096)
    with pytest.raises(qcow2.Unsupported):
        qcow2.write_overlay(str(tmp_path / 'a'), str(raw))
    big = str(tmp_path / 'big.qcow2')
    _qemu_img('create', '-q', '-f', 'qcow2', big, '5T')
    with pytest.raises(qcow2.Unsupported):
        qcow2.write_overlay(str(tmp_path / 'b'), big)
    with pytest.raises(qcow2.Unsupported):
        qcow2.overlay_bytes('/' + 'x' * 1100, 1 << 30)
    assert not os.path.exists(tmp_path / 'a')
    assert not os.path.exists(tmp_path / 'b')


def test_create_overlay_falls_back_to_qemu_img(tmp_path):
    big = str(tmp_path / 'big.qcow2')
    _qemu_img('create', '-q', '-f', 'qcow2', big, '5T')
    top = str(tmp_path / 'top.qcow2')
    images.create_overlay(top, big)
    assert images.backing_file(top) == big
    _qemu_img('check', '-q', top)


def test_never_overwrites(tmp_path):
    base = str(tmp_path / 'base.qcow2')
    _qemu_img('create', '-q', '-f', 'qcow2', base, '1M')
    top = tmp_path / 'top.qcow2'
    top.write_bytes(b'precious')
    with pytest.raises(FileExistsError):
        qcow2.write_overlay(str(top), base)
    assert top.read_bytes() == b'precious'
