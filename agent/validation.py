"""Schemas of the tasks the conductor sends; the agent re-checks each one.

The agent runs as root on the hypervisor, so it trusts nothing in a
message: types and shapes here, paths in ``agent.paths.confine``.
"""

import jsonschema

from agent import exception

_ID = {'type': 'string', 'pattern': '^[A-Za-z0-9_.-]{1,64}$'}
_PATH = {'type': 'string', 'minLength': 1, 'maxLength': 1024}
_DISK = {
    'type': 'object',
    'properties': {
        'qmp_socket': {'type': ['string', 'null'], 'maxLength': 1024},
        'active_image': _PATH,
    },
    'required': ['active_image'],
    'additionalProperties': False,
}

SCHEMAS = {
    'create_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': _DISK,
            'new_image': _PATH,
        },
        'required': ['operation_id', 'disk', 'new_image'],
        'additionalProperties': False,
    },
    'delete_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'mode': {'enum': ['physical', 'merge']},
            'disk': _DISK,
            'snapshot_image': _PATH,
            'parent_image': {'anyOf': [_PATH, {'type': 'null'}]},
            'child_image': {'anyOf': [_PATH, {'type': 'null'}]},
        },
        'required': ['operation_id', 'mode', 'disk', 'snapshot_image'],
        'additionalProperties': False,
    },
    'revert_disk': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': _DISK,
            'snapshot_image': _PATH,
            'new_image': _PATH,
            'discard_image': {'anyOf': [_PATH, {'type': 'null'}]},
        },
        'required': ['operation_id', 'disk', 'snapshot_image', 'new_image'],
        'additionalProperties': False,
    },
}


def validate(action, task):
    """Raise InvalidRequest unless ``task`` fits the action's schema."""
    schema = SCHEMAS.get(action)
    if schema is None:
        raise exception.InvalidRequest('Unknown action %r.' % (action,))
    try:
        jsonschema.validate(task, schema)
    except jsonschema.ValidationError as exc:
        where = '/'.join(str(p) for p in exc.absolute_path) or 'task'
        raise exception.InvalidRequest(
            'Invalid %s task: %s: %s' % (action, where, exc.message))
    if action == 'delete_snapshot' and task['mode'] == 'merge' \
            and not task.get('child_image'):
        raise exception.InvalidRequest('A merge needs child_image.')
