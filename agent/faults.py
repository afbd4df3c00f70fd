"""Fault injection for the recovery tests: kill the agent at a named point.

``[agent] fault_points`` lists points ``ACTION:STEP:WHEN`` (for example
``create_snapshot:pivot:before`` or ``delete_snapshot:merge:after``) where
the agent sends itself SIGKILL, after its journal has recorded the step.
WHEN is ``before`` (the step is about to start) or ``after`` (it ended).
``ACTION:report:before`` kills it after the operation ended but before the
report is sent.  Never set it in production.
"""

import logging
import os
import signal

from oslo_config import cfg

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def point(action, step, when):
    """Die here if this point is armed."""
    name = '%s:%s:%s' % (action, step, when)
    if name in (CONF.agent.fault_points or ()):
        LOG.warning('Fault injection: killing the agent at %(point)s',
                    {'point': name})
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
