"""Entry point for oslo-config-generator (``oslo.config.opts = livesnap``)."""

import collections

from livesnap.conf import agent
from livesnap.conf import api
from livesnap.conf import conductor
from livesnap.conf import database
from livesnap.conf import default
from livesnap.conf import libvirt
from livesnap.conf import metrics
from livesnap.conf import nova

_MODULES = (default, api, agent, conductor, database, libvirt, metrics,
            nova)


def list_opts():
    """Return ``[(group, [opts])]`` for every livesnap option group."""
    grouped = collections.OrderedDict()
    for module in _MODULES:
        for group, opts in module.list_opts().items():
            grouped.setdefault(group, []).extend(opts)
    return list(grouped.items())


def update_library_defaults():
    """livesnap's defaults for library options, for oslo-config-generator
    (``oslo.config.opts.defaults``): the sample shows what livesnap uses.

    At run time the same defaults are set with ``CONF.set_default``
    (``livesnap.rpc``, ``livesnap.conf.healthcheck``); the generator lists
    copies of the libraries' option objects, so it needs them set there.
    """
    from oslo_messaging.notify import notifier
    from oslo_middleware.healthcheck import opts as healthcheck_opts

    from livesnap.conf import healthcheck
    for opt in notifier._notifier_opts:
        if opt.name == 'topics':
            opt.default = ['versioned_notifications']
    for opt in healthcheck_opts.HEALTHCHECK_OPTS:
        if opt.name == 'backends':
            opt.default = list(healthcheck.DEFAULT_BACKENDS)
