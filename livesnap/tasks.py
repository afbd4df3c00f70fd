"""The tasks the conductor sends to agents: their schemas and builders.

One module for both sides: the conductor builds every task with the
functions here, the agent validates every task it receives against the
schemas here (``validate``).  The agent runs as root on the hypervisor, so
it trusts nothing in a message: types and shapes are checked here, and the
driver confines what a locator names (``Driver.check``) before any I/O.

Locator tasks (agent RPC 1.4 and later, see ``agent.rpcapi``): disks and
layers are locators, the driver-tagged JSON objects of
``agent.driver.base``; the conductor names a new layer (``layer_name``, ids
only) and the driver places it::

    create_snapshot {"operation_id", "disk", "layer_name", "quiesce"?}
                    (``quiesce``: 1.7)
    create_snapshots {"operation_id", "disk", "disks": [loc, ...],
                      "layer_names": [name, ...], "quiesce"?}
                      (1.6; ``disk`` is ``disks[0]``, for the journal's
                      resume; ``quiesce``: 1.9)
    clone_snapshot  {"operation_id", "mode", "disk", "snapshot",
                     "layer_name"}                        (1.8)
    delete_snapshot {"operation_id", "mode", "disk", "snapshot",
                     "parent": loc|null, "child": loc|null, "child_is_leaf"}
    revert_disk     {"operation_id", "disk", "snapshot", "layer_name",
                     "discard": loc|null}

The path tasks of agent RPC 1.0 to 1.3 are gone: no conductor sends them
(it serves no agent older than 1.4) and an agent refuses them as invalid.
"""

import copy

from livesnap import schema as schema_check


class InvalidTask(ValueError):
    """A task does not fit its action's schema."""


# An operation id names the agent's journal file: no leading dot, so
# neither "." nor ".." nor a hidden file.
_ID = {'type': 'string', 'pattern': '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$'}
# A new layer's name: ids only (the conductor's disk and operation ids).
_LAYER_NAME = {'type': 'string',
               'pattern': '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$'}
# Shape only; the driver resolves each path before any I/O.
_PATH = {'type': 'string', 'minLength': 2, 'maxLength': 1024,
         'pattern': '^/[^\\x00]*$'}
_SOCKET = {'type': ['string', 'null'], 'maxLength': 1024}

#: A locator: a driver name and a few short strings; a ``path`` is an
#: absolute path, a ``qmp_socket`` a string or null.
LOCATOR = {
    'type': 'object',
    'properties': {
        'driver': {'type': 'string', 'pattern': '^[a-z][a-z0-9_]{0,31}$'},
        'path': _PATH,
        'qmp_socket': _SOCKET,
    },
    'required': ['driver'],
    'maxProperties': 8,
    'propertyNames': {'pattern': '^[a-z][a-z0-9_]{0,31}$'},
    'additionalProperties': {'type': ['string', 'null'], 'maxLength': 1024},
}
_MAYBE_LOCATOR = {'anyOf': [LOCATOR, {'type': 'null'}]}

SCHEMAS = {
    'create_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': LOCATOR,
            'layer_name': _LAYER_NAME,
            # agent RPC 1.7: freeze the guest's filesystems around the pause
            'quiesce': {'enum': ['required', 'preferred', 'off']},
        },
        'required': ['operation_id', 'disk', 'layer_name'],
        'additionalProperties': False,
    },
    'create_snapshots': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': LOCATOR,
            'disks': {'type': 'array', 'items': LOCATOR, 'minItems': 1,
                      'maxItems': 64},
            'layer_names': {'type': 'array', 'items': _LAYER_NAME,
                            'minItems': 1, 'maxItems': 64},
            # agent RPC 1.9: one freeze of the guest around the pause
            'quiesce': {'enum': ['required', 'preferred', 'off']},
        },
        'required': ['operation_id', 'disk', 'disks', 'layer_names'],
        'additionalProperties': False,
    },
    'delete_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'mode': {'enum': ['physical', 'merge']},
            'disk': LOCATOR,
            'snapshot': LOCATOR,
            'parent': _MAYBE_LOCATOR,
            'child': _MAYBE_LOCATOR,
            # the child has no children of its own: the agent may merge
            # the other way (commit the child into the snapshot's layer)
            'child_is_leaf': {'type': 'boolean'},
        },
        'required': ['operation_id', 'mode', 'disk', 'snapshot'],
        'additionalProperties': False,
    },
    'revert_disk': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': LOCATOR,
            'snapshot': LOCATOR,
            'layer_name': _LAYER_NAME,
            'discard': _MAYBE_LOCATOR,
        },
        'required': ['operation_id', 'disk', 'snapshot', 'layer_name'],
        'additionalProperties': False,
    },
    # agent RPC 1.8
    'clone_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'mode': {'enum': ['flat', 'linked']},
            'disk': LOCATOR,
            'snapshot': LOCATOR,
            'layer_name': _LAYER_NAME,
        },
        'required': ['operation_id', 'mode', 'disk', 'snapshot',
                     'layer_name'],
        'additionalProperties': False,
    },
}

#: The conductor's operation actions and the agent's task for each.
ACTIONS = {'create': 'create_snapshot', 'delete': 'delete_snapshot',
           'revert': 'revert_disk', 'create_group': 'create_snapshots',
           'clone': 'clone_snapshot'}


# -- building (the conductor) -------------------------------------------------
def create_task(disk, layer_name):
    """A create: ``disk``'s live layer becomes a snapshot under a new layer
    named ``layer_name``.  (``operations.lock_disk_and_start`` adds the
    operation id.)
    """
    return {'disk': disk, 'layer_name': layer_name}


def create_group_task(disks, layer_names):
    """A group create: every disk of ``disks`` (locators of one VM's
    disks) becomes a snapshot under the new layer of the same index in
    ``layer_names``, all in one pause.
    """
    return {'disk': disks[0], 'disks': list(disks),
            'layer_names': list(layer_names)}


def delete_task(mode, disk, snapshot, parent=None, child=None,
                child_is_leaf=False):
    """A delete: ``physical`` (no children) or ``merge`` into ``child``
    (the disk's locator when the child is the live layer).
    """
    task = {'mode': mode, 'disk': disk, 'snapshot': snapshot}
    if mode == 'merge':
        task.update(parent=parent, child=child, child_is_leaf=child_is_leaf)
    return task


def revert_task(disk, snapshot, layer_name, discard=None):
    """A revert: a new live layer named ``layer_name`` on ``snapshot``;
    ``discard`` (the disk's old live layer) goes once it is in place.
    """
    return {'disk': disk, 'snapshot': snapshot, 'layer_name': layer_name,
            'discard': discard}


def clone_task(mode, disk, snapshot, layer_name):
    """A clone (agent RPC 1.8): a new image named ``layer_name`` beside
    ``snapshot``, a copy (``flat``) or a layer on it (``linked``);
    ``disk`` is the snapshot's disk (the operation's).
    """
    return {'mode': mode, 'disk': disk, 'snapshot': snapshot,
            'layer_name': layer_name}


# -- validating (the agent) ------------------------------------------------
def _check(schema, action, task):
    error = schema_check.first_error(task, schema)
    if error is not None:
        where = '/'.join(str(p) for p in error.absolute_path) or 'task'
        raise InvalidTask('Invalid %s task: %s: %s'
                          % (action, where, error.message))


def validate(action, task):
    """Check ``task`` against its action's schema.

    :returns: the task (a copy).
    :raises InvalidTask: unknown action, or the task does not fit (a path
        task of agent RPC 1.0 to 1.3 among them).
    """
    if not isinstance(action, str) or action not in SCHEMAS:
        raise InvalidTask('Unknown action %r.' % (action,))
    _check(SCHEMAS[action], action, task)
    task = copy.deepcopy(task)
    if action == 'delete_snapshot' and task['mode'] == 'merge' \
            and not task.get('child'):
        raise InvalidTask('A merge needs a child.')
    if action == 'create_snapshots':
        if len(task['disks']) != len(task['layer_names']):
            raise InvalidTask('Invalid create_snapshots task: one layer '
                              'name per disk.')
        if task['disk'] != task['disks'][0]:
            raise InvalidTask('Invalid create_snapshots task: disk is not '
                              'disks[0].')
        if len(set(task['layer_names'])) != len(task['layer_names']):
            raise InvalidTask('Invalid create_snapshots task: layer names '
                              'repeat.')
    return task
