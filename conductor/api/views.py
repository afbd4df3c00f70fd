"""Turn database records into the JSON shapes of the REST contract.

Two shapes of servers and operations: with host details, for callers the
policy ``livesnap:host_details`` allows (admins by default), and without,
for tenants.  Host details are where an object lives on its host: a
server's ``host`` and ``qmp_socket``, a disk's ``active_image``, an
operation's ``host``, each step's ``detail`` (image paths, QEMU node and
job names), and the file paths and host name inside error messages.  A
tenant's shape leaves those keys out and replaces paths in errors with
``<path>`` and the host's name with ``<host>``; ids, names, sizes, states,
step names, timings and pause figures are the same in both.
"""

import re

#: An absolute path in a message: a "/" that starts a word (not "I/O" or
#: a URL's "//"), up to a space, a quote or a bracket; a final "." or ":"
#: is the sentence's.
_PATH = re.compile(r"""(?<![^\s'"(\[=,])/[^\s'"()\[\],;]*[^\s'"()\[\],;.:]""")
#: A quoted or bracketed absolute path (QEMU's messages have both; such a
#: path may hold spaces).
_QUOTED_PATH = re.compile(r"""(?<=')/[^'\n]*(?=')|(?<=")/[^"\n]*(?=")"""
                          r"""|(?<=\[)/[^\]\n]*(?=\])""")

#: What a tenant sees of a step.
_STEP_FIELDS = ('name', 'status', 'started_at', 'duration_ms')


def _iso(dt):
    return dt.isoformat() + 'Z' if dt is not None else None


def redact(text, host=None):
    """``text`` without file paths and without the name ``host``."""
    if not text:
        return text
    text = _PATH.sub('<path>', _QUOTED_PATH.sub('<path>', text))
    if host:
        text = re.sub(r'(?<![\w.-])%s(?![\w-]|\.\w)' % re.escape(host),
                      '<host>', text)
    return text


def host(h, alive):
    info = h.info or {}
    return {'name': h.name, 'state': 'up' if alive else 'down',
            'last_heartbeat': _iso(h.last_heartbeat),
            'agent_started_at': _iso(h.started_at),
            'image_dirs': info.get('image_dirs'),
            'version': info.get('version')}


def domain(vm):
    """A VM as an agent's driver lists it (``Driver.list_vms``)."""
    return {'name': vm.get('name'), 'uuid': vm.get('uuid'),
            'running': bool(vm.get('running')),
            'disks': [{'name': d.get('name'),
                       'path': (d.get('locator') or {}).get('path')}
                      for d in vm.get('disks') or []]}


def disk(d, details=False):
    out = {'name': d.name, 'snapshot_id': d.snapshot_id,
           'busy': d.operation_id is not None}
    if getattr(d, 'clone_of', None):
        out['clone_of'] = d.clone_of
        out['clone_mode'] = d.clone_mode
    if details:
        out['active_image'] = d.active_image
    return out


def server(s, details=False, deleting=False):
    """:param details: include host details (see the module's doc).
    :param deleting: it is being unregistered (status ``deleting``).
    """
    out = {'id': s.id, 'name': s.name, 'project_id': s.project_id,
           'status': 'deleting' if deleting else 'active',
           'created_at': _iso(s.created_at),
           'disks': [disk(d, details) for d in s.disks]}
    if details:
        out['host'] = s.host
        out['qmp_socket'] = s.qmp_socket
    return out


def snapshot(snap, disk_record):
    return {'id': snap.id, 'name': snap.name,
            'server_id': disk_record.server_id, 'disk': disk_record.name,
            'parent_id': snap.parent_id, 'status': snap.status,
            'created_at': _iso(snap.created_at),
            'taken_at': _iso(snap.taken_at),
            'updated_at': _iso(snap.updated_at),
            'size_bytes': snap.size_bytes,
            'current': disk_record.snapshot_id == snap.id,
            'policy_id': snap.policy_id,
            'protected': bool(snap.protected),
            'consistency': snap.consistency,
            'consistency_reason': snap.consistency_reason}


def snapshot_group(group, members):
    """A snapshot group; ``members`` are (snapshot, disk) pairs."""
    return {'id': group.id, 'name': group.name,
            'server_id': group.server_id, 'project_id': group.project_id,
            'operation_id': group.operation_id,
            'created_at': _iso(group.created_at),
            'snapshots': [snapshot(snap, disk) for snap, disk in members]}


def _agent_pause_ms(steps):
    """The agent's own figure of the pauses, beside QEMU's ``pause_ms``."""
    figures = [s['detail']['agent_pause_ms'] for s in steps
               if isinstance(s, dict) and isinstance(s.get('detail'), dict)
               and s['detail'].get('agent_pause_ms') is not None]
    return round(sum(figures), 3) if figures else None


def _step(step, host_name):
    out = {k: step[k] for k in _STEP_FIELDS if k in step}
    if step.get('error'):
        out['error'] = redact(str(step['error']), host_name)
    return out


def operation(op, disk_name=None, details=False):
    """:param details: include host details (see the module's doc)."""
    steps = list(op.steps or [])
    agent_pause_ms = _agent_pause_ms(steps)
    error = op.error
    if not details:
        steps = [_step(x, op.host) for x in steps if isinstance(x, dict)]
        error = redact(error, op.host)
    out = {'id': op.id, 'action': op.action, 'status': op.status,
           'mode': op.mode, 'server_id': op.server_id, 'disk': disk_name,
           'snapshot_id': op.snapshot_id,
           'pause_ms': op.pause_ms, 'agent_pause_ms': agent_pause_ms,
           'progress': op.progress, 'steps': steps, 'error': error,
           'requested_by': op.requested_by,
           'created_at': _iso(op.created_at),
           'updated_at': _iso(op.updated_at)}
    if getattr(op, 'target', None):
        out['target'] = {k: op.target.get(k)
                         for k in ('server_id', 'disk', 'disk_id', 'mode',
                                   'name')}
    if details:
        out['host'] = op.host
    return out


def policy(p, last_outcome=None):
    """A snapshot policy; ``last_outcome`` is its newest run's."""
    return {'id': p.id, 'name': p.name, 'project_id': p.project_id,
            'server_id': p.server_id, 'disks': p.disks,
            'interval': p.interval, 'cron': p.cron, 'timezone': p.timezone,
            'retention': {'keep_last': p.keep_last,
                          'keep_hourly': p.keep_hourly,
                          'keep_daily': p.keep_daily,
                          'keep_weekly': p.keep_weekly,
                          'keep_monthly': p.keep_monthly,
                          'keep_yearly': p.keep_yearly},
            'enabled': p.enabled, 'last_run': _iso(p.last_run),
            'last_outcome': last_outcome, 'next_run': _iso(p.next_run),
            'created_at': _iso(p.created_at),
            'updated_at': _iso(p.updated_at)}


def policy_run(run, details=False, host_name=None):
    """One run of a policy; without host details, paths and the host's
    name in its reason are redacted.
    """
    reason = run.reason if details else redact(run.reason, host_name)
    return {'id': run.id, 'policy_id': run.policy_id,
            'disk': run.disk_name, 'scheduled_for': _iso(run.scheduled_for),
            'outcome': run.outcome, 'reason_code': run.reason_code,
            'reason': reason, 'attempts': run.attempts,
            'snapshot_id': run.snapshot_id,
            'operation_id': run.operation_id,
            'prune_status': run.prune_status,
            'pruned_ids': list(run.pruned_ids or []),
            'created_at': _iso(run.created_at),
            'updated_at': _iso(run.updated_at)}
