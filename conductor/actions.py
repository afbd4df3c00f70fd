"""Each operation action's flow: how its report is applied, how it starts
after waiting for its disk.

An explicit table, read when a report arrives or a waiting operation
starts, so a process applies every action's reports whatever modules it
happened to import.  It sits at the top of the flows (``creation``,
``deletion``, ``revert``, ``clones``, ``groups``), which never import it;
``conductor.waiting`` and ``conductor.dispatch`` read it.
"""

from conductor import clones
from conductor import creation
from conductor import deletion
from conductor import groups
from conductor import revert


def report_handlers(action):
    """``(on_success, on_failure)``: what applies a report of ``action``
    (read from the flows' modules at each call).

    :raises: KeyError for an unknown action.
    """
    return {
        'clone': (clones.apply_cloned, clones.apply_clone_failure),
        'create_group': (groups.apply_created, groups.apply_create_failure),
        'create': (creation.apply_created, creation.apply_create_failure),
        'delete': (deletion.apply_deleted, deletion.apply_delete_failure),
        'revert': (revert.apply_reverted, revert.apply_revert_failure),
    }[action]


def starter(action):
    """What starts an operation of ``action`` that waited for its disk:
    ``(session, op, server, disk) -> True`` if it has a task to send.

    :raises: KeyError for an action that never waits.
    """
    return {
        'create': creation.start_create,
        'delete': deletion.start_delete,
        'revert': revert.start_revert,
    }[action]
