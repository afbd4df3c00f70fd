"""The agent's edge: every task is checked before anything is done.

The schemas live in ``livesnap.tasks``, beside the functions the conductor
builds tasks with (the path tasks of agent RPC 1.0 to 1.3 fit none of
them).  The driver then confines what each locator names
(``Driver.check``) before any I/O.
"""

from agent import exception
from livesnap import tasks


def validate(action, task):
    """``task``, checked (see ``livesnap.tasks.validate``).

    :raises InvalidRequest: unknown action, or the task does not fit.
    """
    try:
        return tasks.validate(action, task)
    except tasks.InvalidTask as exc:
        raise exception.InvalidRequest(str(exc))


def check_locators(driver, task):
    """Let ``driver`` refuse, before any I/O, a locator of the (locator)
    task it did not make or may not touch.

    :raises InvalidRequest, PathNotAllowed:
    """
    driver.check(task['disk'], 'disk')
    for disk in task.get('disks') or ():
        driver.check(disk, 'disk')
    for key in ('snapshot', 'parent', 'child', 'discard'):
        if task.get(key):
            driver.check(task[key])
