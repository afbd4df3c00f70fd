"""Send an operation's recorded task to its agent once more, exactly as
the conductor sends it (the chaos run's "duplicated task" fault)::

    python -m livesnap_tools.chaos.resend --config-file F --operation ID
"""

import sys

from oslo_config import cfg

from conductor.db import api as db
from conductor.db import models
from conductor import dispatch
from livesnap import context
from livesnap import service as common_service

CONF = cfg.CONF


def main(argv=None):
    CONF.register_cli_opt(cfg.StrOpt('operation', required=True,
                                     help='Operation id to send again.'))
    common_service.prepare('livesnap-chaos-resend', argv)
    with db.transaction() as s:
        op = s.get(models.Operation, CONF.operation)
        if op is None or op.task is None:
            print('no task for operation %s' % CONF.operation,
                  file=sys.stderr)
            return 1
        s.expunge(op)
    dispatch.send_task(context.make(), op)
    from livesnap import rpc
    rpc.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
