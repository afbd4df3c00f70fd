"""livesnap configuration: one module per option group, registered on the
global ``oslo_config.cfg.CONF`` (oslo.messaging registers its own options
there too, so a private ConfigOpts is not an option)."""

from oslo_config import cfg

from livesnap.conf import agent
from livesnap.conf import api
from livesnap.conf import conductor
from livesnap.conf import database
from livesnap.conf import default
from livesnap.conf import metrics
from livesnap.conf import libvirt

CONF = cfg.CONF

default.register_opts(CONF)
api.register_opts(CONF)
agent.register_opts(CONF)
conductor.register_opts(CONF)
database.register_opts(CONF)
metrics.register_opts(CONF)
libvirt.register_opts(CONF)

# oslo.messaging's own options ([DEFAULT] transport_url, ...) and
# livesnap's default transport.
from livesnap import rpc  # noqa: E402,F401
