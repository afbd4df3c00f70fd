"""The tasks the conductor sends to agents: their schemas and builders.

One module for both sides: the conductor builds every task with the
functions here, the agent validates every task it receives against the
schemas here (``validate``).  The agent runs as root on the hypervisor, so
it trusts nothing in a message: types and shapes are checked here, and the
driver confines what a locator names (``Driver.check``) before any I/O.

Two forms, by agent RPC version (see ``agent.rpcapi``):

* **locator tasks** (1.4): disks and layers are locators, the driver-tagged
  JSON objects of ``agent.driver.base``; the conductor names a new layer
  (``layer_name``, ids only) and the driver places it::

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

* **legacy tasks** (1.0-1.3, QEMU only): paths (``disk: {qmp_socket,
  active_image}``, ``new_image``, ``snapshot_image``...).  A conductor
  sends them to agents that cannot take 1.4 (``legacy_task``); an agent
  turns one into a locator task at the edge (``validate``) and answers it
  with a legacy result (``legacy_result``); a conductor turns a legacy
  result into a locator one (``locator_result``).
"""

import copy
import os
import re

from livesnap import locators
from livesnap import schema as schema_check

#: a QEMU layer's file name for a layer name (the qemu driver's rule, which
#: legacy tasks spell out)
QEMU_LAYER = locators.LAYER_FILE


class InvalidTask(ValueError):
    """A task does not fit its action's schema."""


# An operation id names the agent's journal file: no leading dot, so
# neither "." nor ".." nor a hidden file.
_ID = {'type': 'string', 'pattern': '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$'}
# A new layer's name: ids only (the conductor's disk and operation ids).
_LAYER_NAME = {'type': 'string',
               'pattern': '^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$'}
# Shape only; the driver resolves each path before any I/O.
_LAYER_NAME_RE = re.compile(r'^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}\Z')
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
    # agent RPC 1.8; no legacy form
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

_LEGACY_DISK = {
    'type': 'object',
    'properties': {
        'qmp_socket': _SOCKET,
        'active_image': _PATH,
    },
    'required': ['active_image'],
    'additionalProperties': False,
}
_MAYBE_PATH = {'anyOf': [_PATH, {'type': 'null'}]}

#: The tasks of agent RPC 1.0 to 1.3.
LEGACY_SCHEMAS = {
    'create_snapshot': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': _LEGACY_DISK,
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
            'disk': _LEGACY_DISK,
            'snapshot_image': _PATH,
            'parent_image': _MAYBE_PATH,
            'child_image': _MAYBE_PATH,
            'child_is_leaf': {'type': 'boolean'},
        },
        'required': ['operation_id', 'mode', 'disk', 'snapshot_image'],
        'additionalProperties': False,
    },
    'revert_disk': {
        'type': 'object',
        'properties': {
            'operation_id': _ID,
            'disk': _LEGACY_DISK,
            'snapshot_image': _PATH,
            'new_image': _PATH,
            'discard_image': _MAYBE_PATH,
        },
        'required': ['operation_id', 'disk', 'snapshot_image', 'new_image'],
        'additionalProperties': False,
    },
}

#: The conductor's operation actions and the agent's task for each.
ACTIONS = {'create': 'create_snapshot', 'delete': 'delete_snapshot',
           'revert': 'revert_disk', 'create_group': 'create_snapshots',
           'clone': 'clone_snapshot'}

#: Keys only a legacy task has.
_LEGACY_KEYS = ('new_image', 'snapshot_image')


# -- building (the conductor) -------------------------------------------------
def create_task(disk, layer_name):
    """A create: ``disk``'s live layer becomes a snapshot under a new layer
    named ``layer_name``.  (``operations.lock_disk_and_start`` adds the
    operation id.)"""
    return {'disk': disk, 'layer_name': layer_name}


def create_group_task(disks, layer_names):
    """A group create: every disk of ``disks`` (locators of one VM's
    disks) becomes a snapshot under the new layer of the same index in
    ``layer_names``, all in one pause."""
    return {'disk': disks[0], 'disks': list(disks),
            'layer_names': list(layer_names)}


def delete_task(mode, disk, snapshot, parent=None, child=None,
                child_is_leaf=False):
    """A delete: ``physical`` (no children) or ``merge`` into ``child``
    (the disk's locator when the child is the live layer)."""
    task = {'mode': mode, 'disk': disk, 'snapshot': snapshot}
    if mode == 'merge':
        task.update(parent=parent, child=child, child_is_leaf=child_is_leaf)
    return task


def revert_task(disk, snapshot, layer_name, discard=None):
    """A revert: a new live layer named ``layer_name`` on ``snapshot``;
    ``discard`` (the disk's old live layer) goes once it is in place."""
    return {'disk': disk, 'snapshot': snapshot, 'layer_name': layer_name,
            'discard': discard}


def clone_task(mode, disk, snapshot, layer_name):
    """A clone (agent RPC 1.8): a new image named ``layer_name`` beside
    ``snapshot``, a copy (``flat``) or a layer on it (``linked``);
    ``disk`` is the snapshot's disk (the operation's)."""
    return {'mode': mode, 'disk': disk, 'snapshot': snapshot,
            'layer_name': layer_name}


def is_legacy(task):
    """True for a task of agent RPC 1.0 to 1.3."""
    return isinstance(task, dict) and any(k in task for k in _LEGACY_KEYS)


def _path(locator):
    return locator['path'] if locator else None


def legacy_task(action, task):
    """The task of agent RPC 1.3 that means what locator task ``task``
    means, for an agent that cannot take 1.4.  Only QEMU locators have
    one.

    :raises InvalidTask: a locator of another driver.
    """
    action = ACTIONS.get(action, action)
    if action not in LEGACY_SCHEMAS:
        raise InvalidTask('%s needs an agent of RPC 1.8 or later' % action)
    for value in task.values():
        if isinstance(value, dict) and value.get('driver') != 'qemu':
            raise InvalidTask('Only the qemu driver\'s tasks can be sent to '
                              'an agent older than RPC 1.4')
    disk = task['disk']
    out = {'disk': {'qmp_socket': disk.get('qmp_socket'),
                    'active_image': disk['path']}}
    if 'operation_id' in task:
        out['operation_id'] = task['operation_id']
    if 'layer_name' in task:
        out['new_image'] = os.path.join(os.path.dirname(disk['path']),
                                        QEMU_LAYER % task['layer_name'])
    if action == 'create_snapshot':
        return out
    out['snapshot_image'] = _path(task['snapshot'])
    if action == 'revert_disk':
        out['discard_image'] = _path(task.get('discard'))
        return out
    out['mode'] = task['mode']
    if task['mode'] == 'merge':
        out.update(parent_image=_path(task.get('parent')),
                   child_image=_path(task.get('child')),
                   child_is_leaf=task.get('child_is_leaf', False))
    return out


# -- validating (the agent) ------------------------------------------------
def _check(schema, action, task):
    error = schema_check.first_error(task, schema)
    if error is not None:
        where = '/'.join(str(p) for p in error.absolute_path) or 'task'
        raise InvalidTask('Invalid %s task: %s: %s'
                          % (action, where, error.message))


def validate(action, task):
    """Check ``task`` against its action's schema (the locator form, or
    the legacy one) and give it in the locator form.

    :returns: the locator task (a copy; a legacy task translated).
    :raises InvalidTask: unknown action, or the task does not fit.
    """
    if not isinstance(action, str) or action not in SCHEMAS:
        raise InvalidTask('Unknown action %r.' % (action,))
    legacy = is_legacy(task)
    if legacy and action not in LEGACY_SCHEMAS:
        raise InvalidTask('A %s task has no legacy form.' % action)
    _check((LEGACY_SCHEMAS if legacy else SCHEMAS)[action], action, task)
    task = _from_legacy(action, task) if legacy else copy.deepcopy(task)
    if action == 'delete_snapshot' and task['mode'] == 'merge' \
            and not task.get('child'):
        raise InvalidTask('A merge needs child_image.' if legacy
                          else 'A merge needs a child.')
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


def _qemu_image(path):
    return {'driver': 'qemu', 'path': path} if path else None


def _from_legacy(action, task):
    """The locator form of a validated legacy task."""
    active = task['disk']['active_image']
    disk = {'driver': 'qemu', 'qmp_socket': task['disk'].get('qmp_socket'),
            'path': active}

    def layer(path):
        """A layer of ``disk``: the disk's locator for its live one."""
        return disk if path == active else _qemu_image(path)

    out = {'operation_id': task['operation_id'], 'disk': disk}
    if 'new_image' in task:
        new = task['new_image']
        name = os.path.basename(new)
        if os.path.dirname(new) != os.path.dirname(active) or \
                not name.endswith('.qcow2') or name == '.qcow2':
            raise InvalidTask(
                'Invalid %s task: new_image: %r is not a .qcow2 file beside '
                'the active image' % (action, new[:80]))
        out['layer_name'] = name[:-len('.qcow2')]
        if not _LAYER_NAME_RE.match(out['layer_name']):
            raise InvalidTask('Invalid %s task: new_image: %r'
                              % (action, new[:80]))
    if action == 'create_snapshot':
        return out
    out['snapshot'] = _qemu_image(task['snapshot_image'])
    if action == 'revert_disk':
        out['discard'] = layer(task.get('discard_image'))
        return out
    out['mode'] = task['mode']
    if task['mode'] == 'merge':
        out.update(parent=_qemu_image(task.get('parent_image')),
                   child=layer(task.get('child_image')),
                   child_is_leaf=task.get('child_is_leaf', False))
    return out


# -- results ------------------------------------------------------------------
def legacy_result(action, result):
    """The result an agent of RPC 1.3 gave, from a driver's result (the
    agent answers a legacy task with it)."""
    if not result or action == 'delete_snapshot' and 'child' not in result:
        return dict(result or {})
    if action == 'create_snapshot':
        return {'snapshot_image': result['snapshot']['path'],
                'active_image': result['disk']['path'],
                'size_bytes': result.get('size_bytes'),
                'online': result.get('online')}
    if action == 'revert_disk':
        return {'active_image': result['disk']['path'],
                'online': result.get('online', False)}
    return {'child_image': result['child']['path'],
            'online': result.get('online'),
            'direction': result.get('direction'),
            'child_size_bytes': result.get('child_size_bytes')}


def locator_result(action, task, result):
    """The locator form of ``result``, the answer to ``task`` as sent: a
    legacy task's result (from an agent older than 1.4) is translated with
    the task's disk; a locator task's is returned as it is.  (``action``:
    the agent's, or the conductor's name of it.)"""
    action = ACTIONS.get(action, action)
    if not is_legacy(task) or not result:
        return result or {}
    disk = _from_legacy(action, task)['disk']
    if action == 'create_snapshot':
        return {'snapshot': _qemu_image(result.get('snapshot_image')
                                        or disk['path']),
                'disk': dict(disk, path=result['active_image']),
                'size_bytes': result.get('size_bytes'),
                'online': result.get('online')}
    if action == 'revert_disk':
        return {'disk': dict(disk, path=result['active_image']),
                'online': result.get('online', False)}
    if 'child_image' not in result:
        return dict(result)
    child = result['child_image']
    live = task.get('child_image') == disk['path']
    new_disk = dict(disk, path=child) if live else disk
    return {'child': new_disk if live else _qemu_image(child),
            'disk': new_disk, 'direction': result.get('direction'),
            'online': result.get('online'),
            'child_size_bytes': result.get('child_size_bytes')}


# -- the audit with an agent older than 1.4 ---------------------------------
#: what the QEMU driver's image work appends to a file's name
_QEMU_WORK_SUFFIX = locators.WORK_SUFFIX


def legacy_paths(layers):
    """The image paths ``inspect_images`` (RPC 1.0) takes for QEMU
    locators ``layers``."""
    return [loc['path'] for loc in layers
            if loc and loc.get('driver') == 'qemu' and loc.get('path')]


def legacy_server(disks):
    """What ``server_running`` (RPC 1.0) takes for the server whose disks
    have the locators ``disks``: its QMP socket (None: none of its disks
    is a QEMU disk with one)."""
    sockets = [d['qmp_socket'] for d in disks
               if d and d.get('driver') == 'qemu' and d.get('qmp_socket')]
    return sockets[0] if sockets else None


def locator_inspection(layers, report):
    """``Driver.inspect``'s answer from ``inspect_images``' (RPC 1.0)
    ``report`` about the locators ``layers``."""
    seen = report.get('images') or {}
    by_path = {}
    images = []
    for loc in layers:
        path = (loc or {}).get('path')
        info = seen.get(path) or {}
        by_path.setdefault(path, loc)
        images.append({'locator': loc, 'exists': bool(info.get('exists')),
                       'backing': _qemu_image(info.get('backing')),
                       'check': info.get('check'),
                       'error': info.get('error')})
    files = [{'path': f,
              'locator': by_path.get(_QEMU_WORK_SUFFIX.sub('', f))}
             for f in report.get('files') or [] if f not in by_path]
    return {'images': images, 'files': files}
