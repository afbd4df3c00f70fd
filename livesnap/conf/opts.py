"""Entry point for oslo-config-generator (``oslo.config.opts = livesnap``)."""

import collections

from livesnap.conf import agent
from livesnap.conf import api
from livesnap.conf import conductor
from livesnap.conf import database
from livesnap.conf import default
from livesnap.conf import libvirt

_MODULES = (default, api, agent, conductor, database, libvirt)


def list_opts():
    """Return ``[(group, [opts])]`` for every livesnap option group."""
    grouped = collections.OrderedDict()
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            grouped.setdefault(group, []).extend(opts)
    return list(grouped.items())
