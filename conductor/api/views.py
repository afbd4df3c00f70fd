"""Turn database records into the JSON shapes of the REST contract."""


def _iso(dt):
    return dt.isoformat() + 'Z' if dt is not None else None


def host(h, alive):
    info = h.info or {}
    return {'name': h.name, 'state': 'up' if alive else 'down',
            'last_heartbeat': _iso(h.last_heartbeat),
            'agent_started_at': _iso(h.started_at),
            'image_dirs': info.get('image_dirs'),
            'version': info.get('version')}


def disk(d):
    return {'name': d.name, 'active_image': d.active_image,
            'snapshot_id': d.snapshot_id, 'busy': d.operation_id is not None}


def server(s):
    return {'id': s.id, 'name': s.name, 'project_id': s.project_id,
            'host': s.host, 'qmp_socket': s.qmp_socket,
            'created_at': _iso(s.created_at),
            'disks': [disk(d) for d in s.disks]}


def snapshot(snap, disk_record):
    return {'id': snap.id, 'name': snap.name,
            'server_id': disk_record.server_id, 'disk': disk_record.name,
            'parent_id': snap.parent_id, 'status': snap.status,
            'created_at': _iso(snap.created_at),
            'updated_at': _iso(snap.updated_at),
            'size_bytes': snap.size_bytes,
            'current': disk_record.snapshot_id == snap.id}


def _agent_pause_ms(steps):
    """The agent's own figure of the pauses, beside QEMU's ``pause_ms``."""
    figures = [s['detail']['agent_pause_ms'] for s in steps
               if isinstance(s.get('detail'), dict)
               and s['detail'].get('agent_pause_ms') is not None]
    return round(sum(figures), 3) if figures else None


def operation(op, disk_name=None):
    steps = list(op.steps or [])
    return {'id': op.id, 'action': op.action, 'status': op.status,
            'mode': op.mode, 'server_id': op.server_id, 'disk': disk_name,
            'snapshot_id': op.snapshot_id, 'host': op.host,
            'pause_ms': op.pause_ms,
            'agent_pause_ms': _agent_pause_ms(steps),
            'progress': op.progress, 'steps': steps, 'error': op.error,
            'requested_by': op.requested_by,
            'created_at': _iso(op.created_at),
            'updated_at': _iso(op.updated_at)}
