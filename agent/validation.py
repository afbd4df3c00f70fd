"""Schemas of the tasks the conductor sends; the agent re-checks each one.

The agent runs as root on the hypervisor, so it trusts nothing in a
message: types and shapes here, paths in ``agent.paths.confine``.
"""

import re

import jsonschema

from agent import exception


def _ecma_pattern(validator, pattern, instance, schema):
    """``pattern`` as JSON Schema means it (ECMA-262): ``$`` is the end of
    the string, not "before a final newline" as in Python's ``re``."""
    if not validator.is_type(instance, 'string'):
        return
    if (re.search(pattern, instance) is None
            or (pattern.endswith('$') and instance.endswith('\n'))):
        yield jsonschema.ValidationError(
            '%r does not match %r' % (instance[:80], pattern))


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {'pattern': _ecma_pattern})

# An operation id names the agent's journal file: no leading dot, so
# neither "." nor ".." nor a hidden file.
_ID = {'type': 'string', 'pattern': '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$'}
# Shape only; agent.paths.confine resolves each path before any I/O.
_PATH = {'type': 'string', 'minLength': 2, 'maxLength': 1024,
         'pattern': '^/[^\\x00]*$'}
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
            # the child has no children of its own: the agent may merge
            # the other way (commit the child into the snapshot's file)
            'child_is_leaf': {'type': 'boolean'},
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
    schema = SCHEMAS.get(action) if isinstance(action, str) else None
    if schema is None:
        raise exception.InvalidRequest('Unknown action %r.' % (action,))
    error = jsonschema.exceptions.best_match(
        _Validator(schema).iter_errors(task))
    if error is not None:
        where = '/'.join(str(p) for p in error.absolute_path) or 'task'
        raise exception.InvalidRequest(
            'Invalid %s task: %s: %s' % (action, where, error.message))
    if action == 'delete_snapshot' and task['mode'] == 'merge' \
            and not task.get('child_image'):
        raise exception.InvalidRequest('A merge needs child_image.')
