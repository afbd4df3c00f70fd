"""Fault injection for the recovery tests: kill or hold the agent at a
named point.

``[agent] fault_points`` lists points ``ACTION:STEP:WHEN`` (for example
``create_snapshot:pivot:before`` or ``delete_snapshot:merge:after``) where
the agent sends itself SIGKILL, after its journal has recorded the step.
WHEN is ``before`` (the step is about to start) or ``after`` (it ended).
``ACTION:report:before`` kills it after the operation ended but before the
report is sent.  A fourth field, seconds (``create_snapshot:pivot:before:8``),
holds the operation's thread there that long instead of killing the agent
(the rest of the agent, its heartbeats for one, goes on).  The conductor
has points of its own in ``[conductor] fault_points`` (see
``conductor.reports``).  Never set them in production.
"""

import logging
import os
import signal
import time

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
    for entry in armed or ():
        held, _, seconds = entry.rpartition(':')
        if held == name and seconds.replace('.', '', 1).isdigit():
            LOG.warning('Fault injection: holding %(point)s for %(s)s s',
                        {'point': name, 's': seconds})
            time.sleep(float(seconds))
            return
    if name in (armed or ()):
        LOG.warning('Fault injection: killing the process at %(point)s',
                    {'point': name})
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
