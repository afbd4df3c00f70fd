"""livesnap configuration: one module per option group, registered on the
global ``oslo_config.cfg.CONF`` (oslo.messaging registers its own options
there too, so a private ConfigOpts is not an option)."""

from oslo_config import cfg
from oslo_log import log as oslo_logging

from livesnap.conf import agent
from livesnap.conf import api
from livesnap.conf import conductor
from livesnap.conf import database
from livesnap.conf import default
from livesnap.conf import libvirt
from livesnap.conf import metrics
from livesnap.conf import nova

CONF = cfg.CONF

default.register_opts(CONF)
# oslo.log's options: [DEFAULT] debug, log_file, log_dir, use_syslog,
# use_journal, use_json, the format strings, default_log_levels, ...
oslo_logging.register_options(CONF)

#: livesnap's default log line: the thread's request id, then the caller's
#: global request id (``[req-A req-B]``, ``[-]`` outside a request), from
#: oslo.context through ``livesnap.context.RequestIdFilter``.
LOG_FORMAT = ('%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s '
              '[%(request_ids)s] %(message)s')
oslo_logging.set_defaults(logging_context_format_string=LOG_FORMAT)
CONF.set_default('logging_default_format_string', LOG_FORMAT)
api.register_opts(CONF)
agent.register_opts(CONF)
conductor.register_opts(CONF)
database.register_opts(CONF)
metrics.register_opts(CONF)
libvirt.register_opts(CONF)
nova.register_opts(CONF)

# oslo.messaging's own options ([DEFAULT] transport_url, ...) and
# livesnap's default transport.
from livesnap import rpc  # noqa: E402,F401
