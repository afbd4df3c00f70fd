"""docs/notifications.md, generated from ``conductor.notifications``.

``./tools/gen-notification-docs`` writes it; a unit test fails when it no
longer matches, and the functional test checks that the notifications a
real deployment sends have exactly the sample's fields.
"""

import datetime
import json
import sys

from conductor.db import models
from conductor import notifications
from conductor import states

CREATED = datetime.datetime(2026, 11, 25, 9, 0, 0)
OP_ID = '6f1c2a4e-2b1d-4c57-9a53-1d2f0e3b7c11'
SNAP_ID = '0b9e4c43-6f0a-4d7e-8d8e-52a1f77a9c02'
DISK_ID = 'c5a3e0d2-8d41-4f0e-b3a4-2e3c9f1b6d20'
#: The second disk and snapshot of the group samples.
DISK2_ID = 'e1f7b9a0-3c2d-4b8e-9f61-7a4d2c0e5b33'
SNAP2_ID = '4d8a2f17-9e3b-4c6a-b105-6e2f9d7c8a44'
GROUP_ID = '9a7e3c51-0d4f-4b2a-8e6c-3f1b5d9e2a77'
#: The new disk of the clone samples.
CLONE_DISK_ID = '2c4e6a8b-1d3f-4a5b-9c7d-8e0f1a2b3c55'


def _step(name, ms, status='done'):
    return {'name': name, 'started_at': 1795942800.0, 'duration_ms': ms,
            'status': status}


def _op(action, status, mode=None, steps=(), pause_ms=None, error=None,
        requested_by='tenant', snapshot_id=SNAP_ID):
    target = None
    if action == 'clone':
        target = {'server_id': 'srv1', 'disk': 'vdc',
                  'disk_id': CLONE_DISK_ID, 'mode': mode, 'name': None}
    return models.Operation(
        id=OP_ID, project_id='p1', server_id='srv1', disk_id=DISK_ID,
        snapshot_id=snapshot_id, host='hv1', action=action, status=status,
        mode=mode, steps=list(steps), pause_ms=pause_ms, error=error,
        requested_by=requested_by, target=target, created_at=CREATED)


def _paused(step, qemu_ms, agent_ms):
    step = dict(step)
    step['detail'] = {'qemu_pause_ms': qemu_ms, 'agent_pause_ms': agent_ms}
    return step


#: (event type, what it shows, the operation as it stands then)
SAMPLES = [
    ('livesnap.snapshot.create.start', 'a tenant\'s create starts',
     _op('create', states.RUNNING, mode='online')),
    ('livesnap.snapshot.create.end', 'it ended: QEMU\'s pause window '
     '(`pause_ms`), the agent\'s view of it (`agent_pause_ms`), the steps',
     _op('create', states.SUCCEEDED, mode='online', pause_ms=2.61, steps=[
         _step('prepare', 14.2), _step('pause', 0.4), _step('pivot', 1.9),
         _paused(_step('resume', 0.6), 2.61, 3.12)])),
    ('livesnap.snapshot.create.error', 'a create that failed',
     _op('create', states.FAILED, mode='online', steps=[
         _step('prepare', 3.1, status='failed')],
         error='no_space: image directory /var/lib/livesnap/images would '
               'keep 12 MiB free, less than the 64 MiB reserved')),
    ('livesnap.snapshot.delete.start', 'a merge delete starts',
     _op('delete', states.RUNNING, mode='merge')),
    ('livesnap.snapshot.delete.end', 'the merge ended (the snapshot\'s '
     'size is `snapshot_size_bytes`)',
     _op('delete', states.SUCCEEDED, mode='merge', pause_ms=1.8, steps=[
         _step('prepare', 2.0), _step('merge', 812.5),
         _paused(_step('resume', 0.5), 1.8, 2.4), _step('delete', 0.3)])),
    ('livesnap.snapshot.delete.end', 'the conductor\'s own deferred work: '
     'finishing a logically deleted snapshot (`requested_by`: conductor)',
     _op('delete', states.SUCCEEDED, mode='physical', requested_by='conductor',
         steps=[_step('count-children', 0.0), _step('delete', 4.2)])),
    ('livesnap.snapshot.delete.error', 'a merge that failed (the snapshot '
     'is available again)',
     _op('delete', 'failed', mode='merge', steps=[
         _step('prepare', 2.1), _step('merge', 40.3, status='failed')],
         error='merge_failed: block-commit of /var/lib/livesnap/images/'
               'd1-op.qcow2 failed: No space left on device')),
    ('livesnap.snapshot.create.end', 'a run of a snapshot policy '
     '(`requested_by`: policy; its pruning deletes say the same)',
     _op('create', 'succeeded', mode='online', pause_ms=2.2,
         requested_by='policy', steps=[
             _step('prepare', 12.9), _step('pause', 0.3),
             _step('pivot', 1.6), _paused(_step('resume', 0.5), 2.2, 2.7)])),
    ('livesnap.disk.revert.start', 'a revert starts',
     _op('revert', states.RUNNING, mode='offline')),
    ('livesnap.disk.revert.end', 'the revert ended',
     _op('revert', states.SUCCEEDED, mode='offline', steps=[
         _step('prepare', 9.8)])),
    ('livesnap.disk.revert.error', 'a revert that failed (the disk is as '
     'it was)',
     _op('revert', 'failed', mode='offline', steps=[
         _step('prepare', 1.2, status='failed')],
         error='invalid_state: the server is running; a revert needs it '
               'stopped')),
    ('livesnap.snapshot_group.create.start', 'a snapshot group (two disks, '
     'one pause) starts: `group_id`, every member in `disks`',
     _op('create_group', 'running')),
    ('livesnap.snapshot_group.create.end', 'the group ended: one pause '
     'window for all its disks, each member\'s snapshot and size',
     _op('create_group', 'succeeded', mode='online', pause_ms=3.4, steps=[
         _step('prepare', 13.6), _step('prepare', 12.8), _step('pause', 0.4),
         _step('snapshot', 2.3), _paused(_step('resume', 0.6), 3.4, 4.1)])),
    ('livesnap.snapshot_group.create.error', 'a group that failed: no disk '
     'was switched',
     _op('create_group', 'failed', steps=[
         _step('prepare', 11.9), _step('prepare', 2.0, status='failed')],
         error='no_space: image directory /var/lib/livesnap/images would '
               'keep 12 MiB free, less than the 64 MiB reserved')),
    ('livesnap.snapshot.clone.start', 'a clone starts: the new disk in '
     '`target`',
     _op('clone', 'running', mode='linked')),
    ('livesnap.snapshot.clone.end', 'the clone ended (a linked clone: no '
     'pause, no copy)',
     _op('clone', 'succeeded', mode='linked', steps=[
         _step('prepare', 8.7)])),
    ('livesnap.snapshot.clone.error', 'a flat clone that failed',
     _op('clone', 'failed', mode='flat', steps=[
         _step('copy', 230.5, status='failed')],
         error='no_space: image directory /var/lib/livesnap/images would '
               'keep 12 MiB free, less than the 64 MiB reserved')),
    ('livesnap.server.delete.start', 'an administrator unregisters a '
     'server (`DELETE /v1/servers/{id}`): its snapshots go first, each by '
     'a delete of its own (`requested_by`: conductor)',
     _op('server.delete', states.RUNNING, snapshot_id=None, steps=[
         _step('mark-snapshots-deleted', 0.0)])),
    ('livesnap.server.delete.end', 'every snapshot was deleted (merged '
     'into the live layer) and the server\'s records are gone',
     _op('server.delete', states.SUCCEEDED, snapshot_id=None, steps=[
         _step('mark-snapshots-deleted', 0.0),
         _step('delete-snapshots', 0.0), _step('remove-records', 0.0)])),
    ('livesnap.server.delete.error', 'a snapshot\'s delete failed: the '
     'server stays, its remaining snapshots stay logically deleted',
     _op('server.delete', states.FAILED, snapshot_id=None, steps=[
         _step('mark-snapshots-deleted', 0.0)],
         error='Deleting snapshot 4d8a2f17-9e3b-4c6a-b105-6e2f9d7c8a44 '
               'failed (operation 0b1f...): merge_failed')),
]

# Markdown table rows do not wrap: the noqa at the end covers them.
HEADER = """\
<!-- Generated by ./tools/gen-notification-docs; do not edit. -->
# Notifications

The conductor sends a versioned notification when an operation starts
and when it ends, through oslo.messaging's notifier. Event types:

| event type | when |
| --- | --- |
| `livesnap.snapshot.create.start` / `.end` / `.error` | a snapshot create starts running / succeeds / fails |
| `livesnap.snapshot.delete.start` / `.end` / `.error` | a snapshot delete (a tenant's, or the conductor's own deferred work: `requested_by` says which) |
| `livesnap.disk.revert.start` / `.end` / `.error` | a revert of a disk to a snapshot |
| `livesnap.server.delete.start` / `.end` / `.error` | a server unregistered with its snapshots (`DELETE /v1/servers/{id}`; `disk_id` is its first disk's) |
| `livesnap.snapshot_group.create.start` / `.end` / `.error` | a snapshot group: several disks of a server in one pause |
| `livesnap.snapshot.clone.start` / `.end` / `.error` | a clone of a snapshot into a new disk |

Each is sent whoever asked: a tenant, a snapshot policy (its runs and the
deletions that prune its snapshots) or the conductor itself (its deferred
deletions); `requested_by` says which.

`.start` is sent when the operation takes its disk and its task goes to
the agent; an operation the conductor decides and finishes at once (a
logical delete) sends `.start` and `.end` together; one that waited for
its disk and could not start sends only `.error`. `.error` notifications
have priority ERROR, the others INFO. Each is sent once, after the change
it reports is committed.

Enable them in the conductor's configuration:

```ini
[oslo_messaging_notifications]
driver = messagingv2
# topics = versioned_notifications   (livesnap's default)
# transport_url = rabbit://...       (default: [DEFAULT] transport_url)
```

They go to the exchange `[DEFAULT] control_exchange` (`livesnap`),
routing key `versioned_notifications.info` (or `.error`). See
docs/operations.md for a consumer.

The payload is versioned like nova's: `livesnap_object.name`,
`.namespace`, `.version` (`MAJOR.MINOR`: a field added is a minor
version; one removed or changed, a major one) and `.data`:

| field | meaning |
| --- | --- |
| `operation_id` | the operation (`GET /v1/operations/{id}`) |
| `action` | `create`, `delete`, `revert`, `create_group` or `clone` |
| `requested_by` | `tenant`; `policy` for a snapshot policy's runs and pruning; `conductor` for its own deferred deletions |
| `project_id`, `server_id`, `disk_id`, `disk` | what it works on (`disk` is the disk's name; a group's first disk) |
| `snapshot_id`, `snapshot_size_bytes` | the snapshot created, deleted, reverted to or cloned, and its size when known (a group's first) |
| `group_id` | the snapshot group the snapshot belongs to, or null |
| `disks` | every disk the operation works on, each with `disk_id`, `disk`, `snapshot_id`, `snapshot_size_bytes`: a group's members in the order of their ids, else the one disk (since 1.1) |
| `target` | a clone's new disk: `server_id`, `disk_id`, `disk` (its name), `mode`; null for other actions (since 1.1) |
| `host` | the agent's host |
| `mode` | `online`/`offline` (create, revert, group); `physical`/`merge`/`logical` (delete); `flat`/`linked` (clone) |
| `status` | `running`, `succeeded` or `failed` |
| `pause_ms` | how long the VM's I/O was paused, on QEMU's own clock (None: no pause) |
| `agent_pause_ms` | the same pause as the agent measured it |
| `steps` | each step's `name`, `status` and `duration_ms` |
| `error` | why it failed |
| `created_at` | when the operation was accepted (UTC) |

## Samples
"""  # noqa: E501


def sample_payload(op):
    """The payload of a sample operation, with its disks' names and
    sizes as the conductor would read them.
    """
    if op.action == 'create_group':
        sizes = (196608, 131072) if op.status == 'succeeded' else (None, None)
        members = [
            notifications.member(DISK_ID, 'vda', SNAP_ID, sizes[0]),
            notifications.member(DISK2_ID, 'vdb', SNAP2_ID, sizes[1])]
        return notifications.payload(op, 'vda', sizes[0], GROUP_ID, members)
    size = {'delete': 196608, 'clone': 196608}.get(op.action)
    return notifications.payload(op, disk_name='vda', snapshot_size=size)


#: The security event of ``conductor.hostauth``: an agent's message refused
#: because it did not prove the host it speaks for (docs/security.md).
HOST_AUTH = """
## Security events

`livesnap.host_auth.refused.error` (priority ERROR): a conductor refused an
agent's message (report, progress, heartbeat) that did not prove, with its
host's key, the host it speaks for (docs/security.md). Payload
`HostAuthPayload` 1.0: `method`, `reason` (`unsigned`, `malformed`,
`unknown_host`, `bad_signature`, `expired`, `wrong_host`,
`not_its_operation`, `replayed`), `claimed_host` (the host the message
names), `signed_host` (the host its signature names, null if unsigned),
`operation_id` (null for a heartbeat).

```json
%s
```
"""


def render():
    parts = [HEADER]
    for event_type, what, op in SAMPLES:
        data = sample_payload(op)
        parts.append('\n### `%s`: %s\n\n```json\n%s\n```\n'
                     % (event_type, what,
                        json.dumps(data, indent=2, sort_keys=True)))
    parts.append(HOST_AUTH % json.dumps({
        'livesnap_object.name': 'HostAuthPayload',
        'livesnap_object.namespace': 'livesnap',
        'livesnap_object.version': '1.0',
        'livesnap_object.data': {
            'method': 'report_operation', 'reason': 'not_its_operation',
            'claimed_host': 'hv2', 'signed_host': 'hv2',
            'operation_id': OP_ID}}, indent=2, sort_keys=True))
    return ''.join(parts)


def main():
    sys.stdout.write(render())


if __name__ == '__main__':
    main()
