"""Compare each disk's tree in the database with the real layer chains.

For every disk of a host the database says which layers exist and what
each one is built on (the live layer sits on ``disk.snapshot_id``, each
snapshot on its parent), by locator.  The host's agent asks its driver
what is really there (``Driver.inspect``); layers are compared by locator,
and a finding shows a locator's ``path`` when it has one.  Drift found:

* ``missing``: a record points to a file that does not exist;
* ``backing``: a file's backing file is not the one its record implies;
* ``corrupt``: ``qemu-img check`` fails;
* ``orphan``: a file in the image directories that no record points to
  and no running operation is making or removing: a qcow2 image, or what
  image work left behind (``.deleted`` files a purge did not unlink,
  ``.tmp`` files of an interrupted create, partial overlays, anything
  else);
* ``stale-lock``: a disk locked by an operation that has ended (and is not
  in doubt);
* ``stuck``: a snapshot ``creating`` or ``deleting`` with no operation
  running on its disk or waiting for it.

``repair`` fixes what is safe to fix without a human: it removes orphans
(the agent refuses files that any process has open), releases stale locks
and marks stuck snapshots ``error`` (creating) or back to ``available``
(deleting, when its file is still in the chain).
"""

import json
import logging
import os

import sqlalchemy as sa

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from conductor import locking
from conductor import states
from conductor import tree
from livesnap import context
from livesnap import locators

LOG = logging.getLogger(__name__)

ACTIVE_OPS = states.ACTIVE


def _key(locator):
    """A locator as a dictionary key (locators are compared whole)."""
    return json.dumps(locator, sort_keys=True)


def _shown(locator):
    """How a finding names a layer: its path, else the locator."""
    return (locator or {}).get('path') or _key(locator)


def _expected(session, host):
    """{locator key: (locator, expected backing locator or None,
    description)}, the ids of the operations that are still running and
    the disks and layers they hold (their files may not be recorded, or be
    on their way out), and the findings of the database alone.
    """
    expected = {}
    busy = {'disks': set(), 'images': set()}
    findings = []
    servers = session.scalars(sa.select(models.Server)
                              .where(models.Server.host == host)).all()
    running_ops = set(session.scalars(
        sa.select(models.Operation.id)
        .where(models.Operation.host == host)
        .where(models.Operation.status.in_(ACTIVE_OPS))))
    for server in servers:
        for disk in server.disks:
            snaps = {x.id: x for x in db.snapshots_of_disk(session, disk.id)
                     if x.status in tree.LIVE_STATUSES and x.locator}
            base = snaps.get(disk.snapshot_id)
            # A linked clone's lowest layer is built on another disk's
            # snapshot.
            origin = session.get(models.Snapshot, disk.clone_of) \
                if disk.clone_mode == 'linked' and disk.clone_of else None
            root = origin.locator if origin is not None else None
            where = '%s/%s' % (server.id, disk.name)
            expected[_key(disk.locator)] = (
                disk.locator, base.locator if base else root,
                '%s live image' % where)
            for snap in snaps.values():
                parent = snaps.get(snap.parent_id)
                expected[_key(snap.locator)] = (
                    snap.locator, parent.locator if parent else root,
                    '%s snapshot %s' % (where, snap.id))
            if disk.operation_id:
                op = session.get(models.Operation, disk.operation_id)
                if op is not None and (op.status in ACTIVE_OPS
                                       or op.status == states.FAILED):
                    # Running, or in doubt (given up on, still locked):
                    # its files may be on their way in or out.
                    busy['disks'].add(disk.id)
                    busy['images'].add(_key(disk.locator))
                    busy['images'].update(_key(x.locator)
                                          for x in snaps.values())
                else:
                    findings.append({
                        'kind': 'stale-lock', 'disk': disk.id,
                        'detail': '%s locked by ended operation %s'
                                  % (where, disk.operation_id)})
            elif any(x.status in (states.CREATING, states.DELETING)
                     for x in snaps.values()) and \
                    db.queued_operation(session, disk.id) is None:
                # (A tenant's operation waiting for the disk has marked its
                # snapshot already; it is not stuck.)
                for x in snaps.values():
                    if x.status in (states.CREATING, states.DELETING):
                        findings.append({
                            'kind': 'stuck', 'snapshot': x.id,
                            'detail': '%s snapshot %s is %s with no '
                                      'operation running' % (
                                          where, x.id, x.status)})
    return expected, running_ops, busy, findings


def _in_the_works(found, running_ops, busy):
    """True if a running (or in doubt) operation may be making or removing
    the file ``found`` (``{"path", "locator"}`` of ``Driver.inspect``):
    layers are named by ids, and a leftover names its layer.
    """
    name = os.path.basename(found['path'])
    if any(x in name for x in running_ops) or \
            any(x in name for x in busy['disks']):
        return True
    return _key(found.get('locator')) in busy['images']


def _inspect(ctxt, host, layers):
    """``Driver.inspect`` of the locators ``layers`` on ``host``."""
    return agent_versions.client().inspect_layers(ctxt, host, layers)


def audit_host(host, repair=False, ctxt=None):
    """Audit (and optionally repair) every disk of ``host``.

    :returns: a list of findings ``{"kind", "detail", ...}``; each repaired
        one has ``"repaired": True``.
    """
    ctxt = ctxt or context.make()
    with db.transaction() as s:
        expected, running_ops, busy, findings = _expected(s, host)
    report = _inspect(ctxt, host, [x[0] for _, x in sorted(expected.items())])
    seen = {_key(info.get('locator')): info
            for info in report.get('images', [])}
    for key, (locator, backing, what) in sorted(expected.items()):
        info = seen.get(key, {})
        path = _shown(locator)
        if info.get('error'):
            findings.append({'kind': 'refused', 'path': path,
                             'detail': '%s: %s' % (what, info['error'])})
        elif not info.get('exists'):
            findings.append({'kind': 'missing', 'path': path,
                             'detail': '%s: file %s is missing'
                                       % (what, path)})
        else:
            if info.get('backing') != backing:
                findings.append({
                    'kind': 'backing', 'path': path,
                    'detail': '%s: backing file is %s, the tree says %s'
                              % (what, _shown(info.get('backing'))
                                 if info.get('backing') else None,
                                 _shown(backing) if backing else None)})
            if info.get('check') != 'ok':
                findings.append({'kind': 'corrupt', 'path': path,
                                 'detail': '%s: %s' % (what,
                                                       info.get('check'))})
    for found in sorted(report.get('files', []),
                        key=lambda f: f['path']):
        if _in_the_works(found, running_ops, busy):
            continue
        path = found['path']
        findings.append({'kind': 'orphan', 'path': path,
                         'detail': '%s (%s) is in an image directory but '
                                   'no record points to it'
                                   % (path, locators.file_kind(path))})
    if repair:
        for finding in findings:
            _repair(ctxt, host, finding)
    for finding in findings:
        LOG.warning('Audit of %(host)s: %(kind)s: %(detail)s%(fixed)s',
                    {'host': host, 'kind': finding['kind'],
                     'detail': finding['detail'],
                     'fixed': ' (repaired)' if finding.get('repaired')
                     else ''})
    return findings


def _repair(ctxt, host, finding):
    kind = finding['kind']
    if kind == 'orphan':
        result = agent_versions.client().remove_image(ctxt, host,
                                                      finding['path'])
        finding['repaired'] = bool(result.get('removed'))
        if not finding['repaired']:
            finding['repair_error'] = result.get('error')
    elif kind == 'stale-lock':
        with db.transaction() as s:
            disk = s.get(models.Disk, finding['disk'])
            locking.unlock_disk(s, disk.id, disk.operation_id)
        finding['repaired'] = True
    elif kind == 'stuck':
        with db.transaction() as s:
            snap = s.get(models.Snapshot, finding['snapshot'])
            snap.status = states.ERROR \
                if snap.status == states.CREATING else states.AVAILABLE
        finding['repaired'] = True


def audit(hosts=None, repair=False):
    """Audit every host with servers (or those named)."""
    with db.transaction() as s:
        names = hosts or sorted(set(s.scalars(
            sa.select(models.Server.host).distinct())))
    results = {}
    for host in names:
        try:
            results[host] = audit_host(host, repair=repair)
        except Exception as exc:
            LOG.error('Audit of %(host)s failed: %(error)s',
                      {'host': host, 'error': exc})
            results[host] = [{'kind': 'unreachable',
                              'detail': 'the agent of %s did not answer: %s'
                                        % (host, exc.__class__.__name__)}]
    return results
