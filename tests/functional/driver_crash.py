"""The agent dies at a fault point and starts again: the crash-point case
of the driver contract suite (tests/functional/test_driver_contract.py).

An operation is run by the agent's own task runner (``agent.task_runner``:
the journal written ahead of each step, ``livesnap.faults`` points fired
from its step listener) in a child process, ``python -m
tests.functional.driver_crash``, with one point armed in ``[agent]
fault_points``: the child sends itself SIGKILL there, as the agent does in
test_faults.py's deployments.  The test process then does what a restarted
agent does, ``agent.recovery.recover`` on the same journal (resume a VM
left paused, run the operation again), and the report it sends is looked
at.  The fake driver keeps its layers in memory: for it the operation runs
in the test process and an exception raised at the point stands in for the
kill (its ``finally`` blocks run, which a kill would skip).
"""

import json
import os
import subprocess
import sys

from agent import driver as driver_loader
from agent import journal as journal_mod
from agent import recovery
from agent import task_runner
from livesnap import context

HOST = 'hv1'
#: the repository's root, where ``-m tests.functional.driver_crash`` runs
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


class Conductor(object):
    """Stands in for the conductor's RPC API: keeps every report."""

    def __init__(self):
        self.reports = {}

    def report_operation(self, ctxt, operation_id, report, host=None):
        self.reports.setdefault(operation_id, []).append(report)


class Crash(BaseException):
    """The stand-in for a SIGKILL at a fault point (the fake driver)."""


def runner(driver, journal_dir, conductor):
    return task_runner.TaskRunner(driver, journal_mod.Journal(journal_dir),
                            conductor, HOST)


def run_killed(harness, journal_dir, action, task, point):
    """Run ``task`` with ``point`` armed until the agent dies there.

    :returns: how the agent ended (-9: killed at the point).
    """
    if not harness.kill_for_crash:
        return _run_raising(harness, journal_dir, action, task, point)
    args = json.dumps({'driver': harness.name, 'options': harness.options,
                       'image_dirs': [harness.imgdir],
                       'journal_dir': journal_dir, 'action': action,
                       'task': task, 'point': point})
    proc = subprocess.run([sys.executable, '-m', __name__, args],
                          capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, cwd=TOP)
    if proc.returncode != -9:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.returncode


def _run_raising(harness, journal_dir, action, task, point):
    from livesnap import faults
    real = faults.point

    def point_or_crash(action_, step, when, armed=None):
        if '%s:%s:%s' % (action_, step, when) == point:
            raise Crash(point)
        return real(action_, step, when, armed)
    faults.point = point_or_crash
    try:
        runner(harness.driver, journal_dir, Conductor()).run(
            context.make(), action, task)
    except Crash:
        return -9
    finally:
        faults.point = real
    return 0


def recover(driver, journal_dir):
    """What the agent does when it starts again.

    :returns: the conductor stand-in, holding the reports sent.
    """
    conductor = Conductor()
    recovery.recover(runner(driver, journal_dir, conductor))
    return conductor


def main(argv):
    args = json.loads(argv[1])
    from livesnap import conf
    conf.CONF([], project='livesnap', default_config_files=[])
    conf.CONF.set_override('fault_points', [args['point']], group='agent')
    driver = driver_loader.load(args['driver'], args['image_dirs'],
                                **args['options'])
    runner(driver, args['journal_dir'], Conductor()).run(
        context.make(), args['action'], args['task'])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
