"""The libvirt driver (``[agent] driver = libvirt``), in its own package:

* ``driver``: ``LibvirtDriver``, the patent's steps through the libvirt
  API;
* ``guest``: the libvirt calls on one domain behind a small class, and
  the domain XML's disks and backing chains (as nova's
  ``nova/virt/libvirt/guest.py``);
* ``pause``: QEMU's clock for a pause (its STOP and RESUME events) and
  the watchdog that resumes a domain suspended past the deadline.
"""
