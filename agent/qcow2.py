"""Writing an empty qcow2 overlay without spawning ``qemu-img``.

Every snapshot makes one overlay: an empty qcow2 image whose backing file
is the disk's current layer.  ``qemu-img create`` costs a process start
(about 20 ms of the whole operation, see docs/benchmarks.md) for what is
four clusters of metadata, so the agent writes the same bytes itself.

The layout is exactly what ``qemu-img create -f qcow2 -b BACKING -F qcow2``
of QEMU 7.2 writes (a test compares the two byte for byte): version 3,
64 KiB clusters, 16-bit refcounts, no compat features;

    cluster 0  header, the backing-format and feature-name extensions,
               the backing file name
    cluster 1  the refcount table (one entry: cluster 2)
    cluster 2  the refcount block (clusters 0 to 3 in use)
    cluster 3  the L1 table, all zero (nothing allocated), written up to
               its last entry

``write_overlay`` refuses what this layout does not cover (a backing that
is not a plain qcow2 image, an L1 table larger than a cluster, a name
longer than QEMU accepts) by raising ``Unsupported``; the caller then uses
``qemu-img``.  The format: docs/interop/qcow2.txt in QEMU's sources.
"""

import os
import struct

MAGIC = b'QFI\xfb'
CLUSTER_BITS = 16
CLUSTER_SIZE = 1 << CLUSTER_BITS
REFCOUNT_ORDER = 4  # 16-bit refcounts
HEADER_LENGTH = 112
#: QEMU refuses longer backing file names (block/qcow2.c).
MAX_BACKING_NAME = 1023

_EXT_END = 0x00000000
_EXT_BACKING_FORMAT = 0xe2792aca
_EXT_FEATURE_NAMES = 0x6803f857

#: (type, bit, name) as QEMU 7.2 lists them: 0 incompatible, 1 compatible,
#: 2 autoclear.
_FEATURES = (
    (0, 0, b'dirty bit'),
    (0, 1, b'corrupt bit'),
    (0, 2, b'external data file'),
    (0, 3, b'compression type'),
    (0, 4, b'extended L2 entries'),
    (1, 0, b'lazy refcounts'),
    (2, 0, b'bitmaps'),
    (2, 1, b'raw external data'),
)

_REFCOUNT_TABLE = 1 * CLUSTER_SIZE
_REFCOUNT_BLOCK = 2 * CLUSTER_SIZE
_L1_TABLE = 3 * CLUSTER_SIZE


class Unsupported(Exception):
    """The overlay needs something this writer does not do."""


def _extension(kind, data):
    padded = data + b'\0' * (-len(data) % 8)
    return struct.pack('>II', kind, len(data)) + padded


def backing_virtual_size(backing):
    """The virtual size in bytes of the qcow2 image ``backing``.

    :raises Unsupported: not a qcow2 image of version 2 or 3, or
        encrypted.
    :raises OSError: it cannot be read.
    """
    with open(backing, 'rb') as f:
        head = f.read(40)
    if len(head) < 40 or head[:4] != MAGIC:
        raise Unsupported('%s is not a qcow2 image' % backing)
    version, = struct.unpack('>I', head[4:8])
    size, crypt = struct.unpack('>QI', head[24:36])
    if version not in (2, 3) or crypt != 0:
        raise Unsupported('%s is a qcow2 image this writer does not '
                          'cover (version %d, encryption %d)'
                          % (backing, version, crypt))
    return size


def overlay_bytes(backing_name, size):
    """The bytes of an empty qcow2 overlay of ``size`` bytes on the qcow2
    image named ``backing_name`` (stored as given).

    :raises Unsupported:
    """
    name = os.fsencode(backing_name)
    if not name or len(name) > MAX_BACKING_NAME or b'\0' in name:
        raise Unsupported('backing file name of %d bytes' % len(name))
    per_l1_entry = CLUSTER_SIZE * (CLUSTER_SIZE // 8)
    l1_size = -(-size // per_l1_entry)
    if l1_size * 8 > CLUSTER_SIZE:
        raise Unsupported('an L1 table of %d entries' % l1_size)

    extensions = (
        _extension(_EXT_BACKING_FORMAT, b'qcow2')
        + _extension(_EXT_FEATURE_NAMES, b''.join(
            struct.pack('>BB46s', kind, bit, label)
            for kind, bit, label in _FEATURES))
        + _extension(_EXT_END, b''))
    name_offset = HEADER_LENGTH + len(extensions)
    if name_offset + len(name) > CLUSTER_SIZE:
        raise Unsupported('a header longer than a cluster')
    header = struct.pack(
        '>4sIQIIQIIQQIIQQQQII',
        MAGIC, 3,
        name_offset, len(name),
        CLUSTER_BITS, size,
        0,                      # crypt_method
        l1_size, _L1_TABLE,
        _REFCOUNT_TABLE, 1,     # refcount table offset, clusters
        0, 0,                   # nb_snapshots, snapshots_offset
        0, 0, 0,                # incompatible, compatible, autoclear
        REFCOUNT_ORDER, HEADER_LENGTH)
    header += b'\0' * (HEADER_LENGTH - len(header))  # compression type zlib

    image = bytearray(_L1_TABLE + l1_size * 8)
    cluster0 = header + extensions + name
    image[:len(cluster0)] = cluster0
    struct.pack_into('>Q', image, _REFCOUNT_TABLE, _REFCOUNT_BLOCK)
    for cluster in range(4):
        struct.pack_into('>H', image, _REFCOUNT_BLOCK + 2 * cluster, 1)
    return bytes(image)


def write_overlay(path, backing):
    """Create ``path`` (must not exist) as an empty qcow2 overlay on the
    qcow2 image ``backing`` (an absolute path, stored as given).

    :raises Unsupported: (nothing written) the caller must use qemu-img.
    :raises OSError:
    """
    data = overlay_bytes(backing, backing_virtual_size(backing))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
