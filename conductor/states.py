"""The states of operations and snapshots, and the allowed transitions.

Every status change goes through ``operations.set_status`` or
``db.operation_transition`` (operations) or ``check_snapshot`` (snapshots),
which refuse a change that is not in these tables.  Status changes are
made against the status the caller expects (a compare-and-set, or under a
row lock), so a late writer can never put an ended operation back to
``running``.

Operations:

* ``pending``: accepted, waiting for its disk (the conductor's own
  deferred deletion holds it); it holds no lock and has no task yet.
* ``running``: it holds its disk's lock; its task is sent (or being sent).
* ``succeeded``: final.
* ``failed``: final, except *in doubt*: given up on while its agent could
  not be asked and still holding its disk's lock; the agent's late report
  then decides (``failed`` -> ``succeeded`` or ``failed``).
"""

PENDING = 'pending'
RUNNING = 'running'
SUCCEEDED = 'succeeded'
FAILED = 'failed'

#: operations that have not ended
ACTIVE = (PENDING, RUNNING)
#: operations that have ended (``failed`` may still be in doubt)
ENDED = (SUCCEEDED, FAILED)

OPERATION_TRANSITIONS = {
    PENDING: (RUNNING, SUCCEEDED, FAILED),
    RUNNING: (RUNNING, SUCCEEDED, FAILED),
    FAILED: (SUCCEEDED, FAILED),   # only while in doubt
    SUCCEEDED: (),
}

# Snapshots.
CREATING = 'creating'
AVAILABLE = 'available'
DELETING = 'deleting'
DELETED = 'deleted'      # logically deleted: hidden, its data still needed
ERROR = 'error'

SNAPSHOT_TRANSITIONS = {
    CREATING: (AVAILABLE, ERROR),
    AVAILABLE: (DELETING, DELETED),
    DELETING: (AVAILABLE, DELETED, DELETING),  # a failed delete goes back
    DELETED: (DELETING,),                      # finished by the conductor
    ERROR: (),
}


class InvalidTransition(Exception):
    """A status change the state machine does not allow."""


def operation_may(old, new):
    return new in OPERATION_TRANSITIONS.get(old, ())


def check_snapshot(snap, new):
    """Set ``snap.status`` to ``new`` if the machine allows it.

    The caller holds the snapshot's disk lock or row lock.
    :raises: InvalidTransition
    """
    if snap.status != new and new not in SNAPSHOT_TRANSITIONS.get(
            snap.status, ()):
        raise InvalidTransition('snapshot %s: %s -> %s'
                                % (snap.id, snap.status, new))
    snap.status = new
