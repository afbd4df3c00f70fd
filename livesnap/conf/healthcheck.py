"""livesnap's defaults for oslo.middleware's ``[healthcheck]`` options.

The checks themselves are the conductor's (``conductor.healthcheck``);
their names are here so the sample configuration
(``livesnap.conf.opts``) shows livesnap's defaults without importing the
conductor.
"""

from oslo_config import cfg
from oslo_middleware.healthcheck import opts as healthcheck_opts

CONF = cfg.CONF

#: livesnap's default ``[healthcheck] backends``.
DEFAULT_BACKENDS = ['livesnap_database', 'livesnap_bus']


def set_defaults(conf=CONF):
    """Register ``[healthcheck]`` and check the database and the bus
    unless the operator lists other backends.
    """
    conf.register_opts(healthcheck_opts.HEALTHCHECK_OPTS, group='healthcheck')
    conf.set_default('backends', DEFAULT_BACKENDS, group='healthcheck')
