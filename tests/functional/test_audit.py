"""``livesnap-manage audit``: drift between the database and the disks is
found, and what is safe to repair is repaired."""

import os

import pytest

from agent import images
from conductor import audit
from conductor.db import api as db
from conductor.db import models
from conductor import manage
from livesnap_tools import fixtures
from livesnap_tools import libvirtd
from tests.functional import libvirt_vm
from tests.functional import scenarios

pytestmark = pytest.mark.functional


@pytest.fixture
def tree(request, conf, tmp_path, database):
    """An offline server with two snapshots: base <- s1 <- s2 <- live.

    On the QEMU driver (a disk registered by path), or with
    ``@pytest.mark.parametrize('tree', ['libvirt'], indirect=True)`` on
    the libvirt driver (a shut-off domain registered by domain).
    """
    driver = getattr(request, 'param', 'qemu')
    dep = fixtures.InProcessDeployment(conf, tmp_path)
    base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 8 * scenarios.MiB)
    domain = None
    if driver == 'libvirt':
        pytest.importorskip('libvirt')
        request.getfixturevalue('libvirt_up')
        conf.set('driver', 'libvirt', group='agent')
        conf.set('uri', libvirtd.URI, group='libvirt')
        domain = libvirt_vm.LibvirtVM(base, 'srv1')
    try:
        dep.start()
        try:
            if domain is not None:
                dep.ok('POST', '/v1/servers', {'server': {
                    'id': 'srv1', 'name': 'srv1', 'project_id': 'p1',
                    'host': fixtures.HOST, 'driver': 'libvirt',
                    'domain': domain.name}},
                    token='admin-token', status=201)
            else:
                dep.register_server('srv1', base)
            s1, _ = scenarios.create_snapshot(dep, 'srv1', 's1')
            s2, _ = scenarios.create_snapshot(dep, 'srv1', 's2')
            yield dep, s1, s2
        finally:
            dep.stop()
    finally:
        if domain is not None:
            domain.kill()


#: the tests that also run on the libvirt driver
both_drivers = pytest.mark.parametrize('tree', ['qemu', 'libvirt'],
                                       indirect=True)


def _kinds(findings):
    return sorted(f['kind'] for f in findings['hv1'])


@both_drivers
def test_no_drift_on_a_clean_tree(tree):
    assert audit.audit() == {'hv1': []}


@both_drivers
def test_orphan_found_and_removed(tree):
    dep, _, _ = tree
    orphan = os.path.join(dep.image_dir, 'left-behind.qcow2')
    images.create_base(orphan, scenarios.MiB)
    assert _kinds(audit.audit()) == ['orphan']
    findings = audit.audit(repair=True)
    assert findings['hv1'][0]['repaired'] is True
    assert not os.path.exists(orphan)
    assert audit.audit() == {'hv1': []}


def test_every_leftover_file_is_found_and_removed(tree):
    """Not only ``*.qcow2``: what a purge, an interrupted create or a
    partial overlay leaves behind is drift too; sockets are not files.
    """
    import socket
    dep, s1, _ = tree
    with db.transaction() as s:
        disk_id = s.get(models.Snapshot, s1).disk_id
    leftovers = [
        os.path.join(dep.image_dir, 'old-layer.qcow2.deleted'),
        os.path.join(dep.image_dir, '%s-op9.qcow2.tmp-4242' % disk_id),
        os.path.join(dep.image_dir, 'partial.qcow2'),
        os.path.join(dep.image_dir, 'notes.txt')]
    for path in leftovers:
        with open(path, 'wb') as f:
            f.write(b'QFI\xfb' if 'partial' in path else b'x' * 100)
    sock_path = os.path.join(dep.image_dir, 'vm.sock')
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(sock_path)
    try:
        findings = audit.audit()['hv1']
        assert sorted(f['path'] for f in findings) == sorted(leftovers)
        assert {f['kind'] for f in findings} == {'orphan'}
        details = ' '.join(f['detail'] for f in findings)
        assert 'never unlinked' in details and 'interrupted' in details
        findings = audit.audit(repair=True)['hv1']
        assert all(f.get('repaired') for f in findings), findings
        assert not any(os.path.lexists(p) for p in leftovers)
        assert os.path.exists(sock_path)
        assert audit.audit() == {'hv1': []}
    finally:
        sock.close()


@both_drivers
def test_leftovers_of_a_running_operation_are_not_drift(tree):
    """A merge renames the snapshot's file to ``.deleted`` before it
    unlinks it: while its operation runs, that is not an orphan.
    """
    dep, s1, _ = tree
    with db.transaction() as s:
        snap = s.get(models.Snapshot, s1)
        trashed = snap.image + images.TRASH_SUFFIX
        op = models.Operation(
            id='op-running', project_id='p1', server_id='srv1',
            disk_id=snap.disk_id, host='hv1', action='delete',
            status='running')
        s.add(op)
        s.flush()
        snap.disk.operation_id = op.id
    images.create_base(trashed, scenarios.MiB)
    assert audit.audit() == {'hv1': []}
    with db.transaction() as s:
        s.get(models.Operation, 'op-running').status = 'succeeded'
        s.get(models.Snapshot, s1).disk.operation_id = None
    assert [f['path'] for f in audit.audit()['hv1']] == [trashed]


@both_drivers
def test_missing_file_and_wrong_backing_are_reported(tree):
    dep, s1, s2 = tree
    with db.transaction() as s:
        snap1 = s.get(models.Snapshot, s1)
        snap2 = s.get(models.Snapshot, s2)
        path1, path2 = snap1.image, snap2.image
    # s2's file now says its backing is the base image, not s1's file.
    base = images.backing_file(path1)
    images.rebase(path2, base, safe=True)
    kinds = _kinds(audit.audit())
    assert kinds == ['backing']
    os.unlink(path1)
    kinds = _kinds(audit.audit(repair=True))
    assert 'missing' in kinds
    # Drift that needs a human is reported, never "repaired".
    assert os.path.exists(path2)


def test_stale_lock_and_stuck_snapshot_repaired(tree):
    dep, s1, _ = tree
    with db.transaction() as s:
        disk = s.get(models.Snapshot, s1).disk
        disk.operation_id = 'gone-operation'
    assert _kinds(audit.audit()) == ['stale-lock']
    audit.audit(repair=True)
    with db.transaction() as s:
        assert s.get(models.Snapshot, s1).disk.operation_id is None
        s.get(models.Snapshot, s1).status = 'deleting'
    assert _kinds(audit.audit()) == ['stuck']
    audit.audit(repair=True)
    with db.transaction() as s:
        assert s.get(models.Snapshot, s1).status == 'available'
    assert audit.audit() == {'hv1': []}


def test_manage_audit_command(tree, capsys):
    dep, _, _ = tree
    assert manage.main(['audit', '--json']) == 0
    images.create_base(os.path.join(dep.image_dir, 'x.qcow2'), scenarios.MiB)
    assert manage.main(['audit']) == 1
    assert 'orphan' in capsys.readouterr().out
