"""After the chaos: wait (bounded) for the deployment to settle, then
check the invariants and gather the figures of the table."""

import collections
import datetime
import json
import os
import re
import subprocess
import sys
import time

from agent import images
from livesnap_tools.chaos import tenants
from livesnap_tools import testvm

#: seconds of clock difference allowed between QEMU's STOP event time and
#: the tenant's clock (the same host's clock; QEMU stamps its events in
#: microseconds)
CLOCK_SLACK = 0.001

#: how operation errors are grouped in the table: (code, pattern)
ERROR_CODES = (
    ('no_space', r'no space|ENOSPC|No space left|[Nn]ot enough space'),
    ('expired', r'expired|gave up'),
    ('agent_not_answering', r'does not answer|did not answer'),
    ('rpc_error', r'could not be sent'),
    ('qmp_error', r'QMP|qmp|monitor|socket|Connection refused'),
    ('server_not_running', r'not running|is not running'),
    ('image_error', r'qemu-img|image'),
    ('timeout', r'timed out|timeout|deadline'),
)


def code_of(error):
    if not error:
        return 'none'
    for code, pattern in ERROR_CODES:
        if re.search(pattern, error):
            return code
    return re.sub(r'[0-9a-f-]{8,}|/\S+', '…', error)[:60]


def _stuck(env):
    return env.query("SELECT id, action, status, host, steps, error, "
                     "server_id FROM operations WHERE status IN "
                     "('pending', 'running')")


def _locked(env):
    return env.query('SELECT server_id, operation_id FROM disks WHERE '
                     'operation_id IS NOT NULL')


def settle(env, faults_end, bound):
    """Bring back anything that died on its own, then wait until every
    disk is free and no operation is pending or running (at most
    ``bound`` seconds).  Returns the settle figures.
    """
    cl = env.cluster
    died = cl.dead()
    for name in died:
        print('chaos: %s had exited on its own; starting it again' % name,
              file=sys.stderr)
        cl.respawn(name)
        if name.startswith('conductor'):
            env.wait_conductor(name)
    deadline = time.monotonic() + bound
    free_at = None
    while time.monotonic() < deadline:
        if not _stuck(env) and not _locked(env):
            free_at = time.time()
            break
        time.sleep(0.5)
    # the audit asks every agent: wait until each is heard again
    try:
        cl.wait_hosts_up(timeout=max(10.0, deadline - time.monotonic()))
    except Exception as exc:  # noqa - the audit will say which
        print('chaos: %s' % exc, file=sys.stderr)
    return {'died_on_their_own': died,
            'disks_free_after_s': (round(free_at - faults_end, 1)
                                   if free_at else None),
            'settle_bound_s': bound}


def _audit(env, tries=6):
    """The audit's verdict; asked again (up to ``tries`` times, 10 s
    apart) while it only finds agents it could not reach.
    """
    for _ in range(tries):
        ok, findings = _audit_once(env)
        if ok or not all(': unreachable' in f for f in findings):
            break
        time.sleep(10)
    return ok, findings


def _audit_once(env):
    proc = subprocess.run(
        [sys.executable, '-m', 'conductor.manage', '--config-file',
         str(env.cluster.config_file), 'audit', '--json'],
        capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL)
    try:
        results = json.loads(proc.stdout)
    except ValueError:
        return False, 'audit did not answer: %s' % proc.stderr[-300:]
    findings = ['%s: %s %s' % (host, f['kind'], f.get('detail', ''))
                for host, fs in sorted(results.items()) for f in fs]
    return not findings, findings


def invariants(env, result):
    """``[(name, ok, details)]`` of the invariants after the run."""
    out = []
    cl = env.cluster
    # 1. every VM runs
    paused = []
    for spec in cl.vms:
        try:
            status = env.observer.status(spec['name'])
        except Exception as exc:  # noqa
            status = 'unreachable (%s)' % exc
        if status != 'running':
            paused.append('%s: %s' % (spec['name'], status))
    out.append(('no VM paused', not paused, paused))
    # 2. no operation stuck, every disk free
    stuck = []
    for op in _stuck(env):
        steps = op.steps if isinstance(op.steps, list) else json.loads(
            op.steps or '[]')
        if op.status == 'running' and (steps or op.error):
            why = ('its record holds the agent\'s report (%s): the report '
                   'was applied, then the status set back to running (lost '
                   'update, dispatch.send)' % (
                       'error: %s' % op.error[:80] if op.error
                       else '%d steps' % len(steps)))
        else:
            why = ('no report applied (report lost, or not redelivered '
                   'after a crash)')
        stuck.append('%s %s on %s (%s) %s: %s' % (
            op.id[:8], op.action, op.server_id, op.host, op.status, why))
    out.append(('no operation pending/running', not stuck, stuck))
    locked = ['%s locked by %s' % (r[0], r[1][:8]) for r in _locked(env)]
    out.append(('every disk free', not locked, locked))
    # a task thrown away on its way was sent again and its operation ended
    lost_open = []
    for host, method, op_id in env.lost_tasks:
        rows = env.query('SELECT status, error FROM operations WHERE '
                         'id = :i', i=op_id or '')
        status = rows[0][0] if rows else 'unknown'
        if status not in ('succeeded', 'failed', 'cancelled'):
            lost_open.append('%s %s on %s: %s' % (
                (op_id or '?')[:8], method, host, status))
    if env.lost_tasks:
        out.append(('every operation whose task was lost ended',
                    not lost_open, lost_open))
    if result.get('died_on_their_own'):
        out.append(('no process died on its own', False,
                    result['died_on_their_own']))
    # 3. the audit
    ok, findings = _audit(env)
    out.append(('audit finds no drift', ok, findings))
    # 4. images and contents
    snaps = env.query('SELECT s.id, s.status, s.image, d.server_id, '
                      's.created_at, s.taken_at FROM snapshots s JOIN '
                      'disks d ON s.disk_id = d.id')
    disks = {r[0]: r[1] for r in env.query(
        'SELECT server_id, active_image FROM disks')}
    bad_images, bad_content, lost, unknown, behind = [], [], [], [], []
    inconsistent = []
    # every image file there is (a file the records name but that is gone
    # is the audit's finding, "missing")
    paths = set()
    for host in cl.hosts:
        d = os.path.join(env.root, host, 'images')
        paths |= {os.path.join(d, n) for n in os.listdir(d)
                  if n.endswith('.qcow2')}
    for path in sorted(paths):
        try:
            images.check(path, force_share=True)
        except Exception as exc:  # noqa
            bad_images.append(str(exc)[:300])
    by_id = {r[0]: r for r in snaps}
    for w in env.workers:
        name = w.name
        m = w.model
        size = m.slot_size
        try:
            env.observer.flush(name)
        except Exception:  # noqa - reported by "no VM paused"
            pass

        def content(image, expected, label):
            for slot in range(tenants.SLOTS):
                pattern = expected.get(slot, 0)
                if not testvm.read_pattern_ok(image, pattern, slot * size,
                                              size):
                    bad_content.append('%s %s: slot %d is not 0x%02x'
                                       % (name, label, slot, pattern))
                    return
        # the live disk as the VM has it (the records may be behind it
        # when a report was lost)
        try:
            top = env.observer.top_image(name)
        except Exception:  # noqa - reported by "no VM paused"
            top = disks[name]
        if top != disks[name]:
            behind.append('%s: QEMU writes to %s, the database says %s'
                          % (name, os.path.basename(top),
                             os.path.basename(disks[name])))
        content(top, m.live, 'live disk')
        for sid, expected in m.snapshots.items():
            row = by_id.get(sid)
            if sid in m.deleted:
                if row is not None and row[1] == 'available':
                    lost.append('%s snapshot %s: deleted, still available'
                                % (name, sid[:8]))
                continue
            if row is None or row[1] != 'available':
                if sid not in m.delete_asked:
                    last = env.query(
                        'SELECT action, status, error FROM operations '
                        'WHERE snapshot_id = :s ORDER BY created_at DESC '
                        'LIMIT 1', s=sid)
                    lost.append('%s snapshot %s: seen succeeded, now %s%s'
                                % (name, sid[:8],
                                   row[1] if row else 'gone',
                                   '; last operation on it: %s %s %s' % (
                                       last[0][0], last[0][1],
                                       (last[0][2] or '')[:200])
                                   if last else ''))
                continue
            why = consistent(row[2], m, _epoch(row[4]), _epoch(row[5]))
            if why:
                inconsistent.append('%s snapshot %s%s: %s' % (
                    name, sid[:8], ' (adopted)' if sid in m.adopted else '',
                    why))
        for r in snaps:
            if (r[3] == name and r[1] == 'available'
                    and r[0] not in m.snapshots):
                unknown.append('%s snapshot %s' % (name, r[0][:8]))
    out.append(('every image passes qemu-img check', not bad_images,
                bad_images))
    out.append(('the live disk holds every write',
                not bad_content, bad_content + (
                    ['not checked (unknown to its tenant): %s' % u
                     for u in unknown])))
    out.append(('every snapshot is a prefix of the writes, none after '
                'its taken_at', not inconsistent, inconsistent))
    out.append(('nothing a tenant saw succeed was lost', not lost, lost))
    out.append(('the records name the image each VM writes to',
                not behind, behind))
    alive = result.get('tenant_threads_alive')
    if alive:
        out.append(('every tenant finished', False, alive))
    return out


def _epoch(dt):
    """A naive UTC datetime of the database as UNIX time (None: None)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def prefixes(model, requested_at, taken_at):
    """``(lo, hi)``: a snapshot asked for at ``requested_at`` and taken
    (paused) at ``taken_at`` must hold the first ``n`` writes of
    ``model.history`` for some ``lo <= n <= hi``: every write that ended
    before the request (``lo``), none that began after ``taken_at``
    (``hi``; every write when ``taken_at`` is unknown).
    """
    hist = model.history
    lo = (sum(1 for h in hist if h[4] < requested_at)
          if requested_at is not None else 0)
    hi = (sum(1 for h in hist if h[3] <= taken_at + CLOCK_SLACK)
          if taken_at is not None else len(hist))
    return lo, hi


def consistent(image, model, requested_at, taken_at, read=None):
    """None if ``image`` holds a prefix of the writes allowed by
    :func:`prefixes`, else why not (crash consistency).

    :param read: ``(image, pattern, offset, length) -> bool`` (default
        ``testvm.read_pattern_ok``); each slot is read once per pattern.
    """
    read = read or testvm.read_pattern_ok
    size = model.slot_size
    lo, hi = prefixes(model, requested_at, taken_at)
    if hi < lo:
        return ('taken at %s, before writes that ended before its request '
                'at %s' % (taken_at, requested_at))
    seen = {}

    def holds(slot, pattern):
        if (slot, pattern) not in seen:
            seen[slot, pattern] = read(image, pattern, slot * size, size)
        return seen[slot, pattern]
    for n in range(hi, lo - 1, -1):
        state = model.after(n)
        if all(holds(slot, state.get(slot, 0))
               for slot in range(tenants.SLOTS)):
            return None
    return ('holds none of the disk\'s states after writes %d..%d (every '
            'write that ended before its request, none begun after its '
            'taken_at)' % (lo, hi))


def operations(env):
    """``{action: {'started', 'succeeded', 'failed': {code: n}, 'other'}}``
    from the database.
    """
    out = {}
    for op in env.query('SELECT action, status, error, requested_by FROM '
                        'operations'):
        key = op.action if op.requested_by == 'user' else '%s (%s)' % (
            op.action, op.requested_by)
        row = out.setdefault(key, {'started': 0, 'succeeded': 0,
                                   'failed': collections.Counter(),
                                   'other': collections.Counter(),
                                   'samples': {}})
        row['started'] += 1
        if op.status == 'succeeded':
            row['succeeded'] += 1
        elif op.status == 'failed':
            row['failed'][code_of(op.error)] += 1
            row['samples'].setdefault(code_of(op.error),
                                      (op.error or '')[:300])
        else:
            row['other'][op.status] += 1
    return out


def refusals(env):
    """Requests the API refused or whose answer was lost, by reason."""
    c = collections.Counter()
    for w in env.workers:
        for f in w.failures:
            err = f['error']
            if err.startswith('HTTP') or err.startswith('connection'):
                c['%s: %s' % (f['action'], err.strip())] += 1
            elif not err.startswith('operation failed'):
                c['%s: %s' % (f['action'], re.sub(
                    r'[0-9a-f-]{8,}', '…', err)[:80])] += 1
    return c


def longest_pause(env):
    best, vm = 0.0, None
    for w in env.workers:
        for start, end in env.observer.all_windows(w.name):
            if (end - start) * 1000.0 > best:
                best, vm = (end - start) * 1000.0, w.name
    return round(best, 2), vm
