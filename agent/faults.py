"""Fault injection for the recovery tests: kill the agent at a named point.

``[agent] fault_points`` lists points ``ACTION:STEP:WHEN`` (for example
``create_snapshot:pivot:before`` or ``delete_snapshot:merge:after``) where
the agent sends itself SIGKILL, after its journal has recorded the step.
WHEN is ``before`` (the step is about to start) or ``after`` (it ended).
``ACTION:report:before`` kills it after the operation ended but before the
report is sent.  The conductor has points of its own in ``[conductor]
fault_points`` (see ``conductor.reports``).  Never set them in production.
"""

import logging
import os
import signal

from oslo_config import cfg

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def point(action, step, when, armed=None):
    """Die here if this point is armed.

    :param armed: the armed points; ``[agent] fault_points`` by default.
    """
    name = '%s:%s:%s' % (action, step, when)
    if armed is None:
        armed = CONF.agent.fault_points
    if name in (armed or ()):
        LOG.warning('Fault injection: killing the process at %(point)s',
                    {'point': name})
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
