"""The QEMU/qcow2 driver (``[agent] driver = qemu``), in its own package:

* ``driver``: ``QemuDriver``, the patent's steps over QMP and qemu-img;
* ``graph``: QEMU's block graph (its qcow2 nodes by image file) and the
  stable node names and block-job ids the driver gives;
* ``qmp``: the synchronous QMP client;
* ``qga``: the guest agent (qemu-ga) client, for quiesce.

Only this package talks QMP; ``tests/unit/test_layout.py`` checks it.
"""
