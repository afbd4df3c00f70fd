"""The child-count rule end to end, on a running VM and on an offline disk.

Every branch: the newest snapshot (its child is the live image), a middle
snapshot (its child is another snapshot), a snapshot with two children
after a revert (logical, then finished by the conductor), a leaf with no
children, and the root.  After each step the invariants of
tests.functional.tree_check hold.
"""

import time

import pytest

from conductor.db import api as db
from livesnap_tools import fixtures
from tests.functional import libvirt_vm
from tests.functional import tenant
from tests.functional import tree_check

pytestmark = pytest.mark.functional


def run_every_branch(dep, tmp_path, database_url, online, driver='qemu'):
    d = tenant.TenantDriver(dep, tmp_path, database_url, online, driver)
    try:
        d.write(0, 0xa1)
        s1 = d.snapshot('s1')
        d.write(1, 0xa2)
        s2 = d.snapshot('s2')
        d.write(2, 0xa3)
        s3 = d.snapshot('s3')
        d.write(0, 0xb0)
        d.check()

        # The newest snapshot: its only child is the live image.
        op = d.delete(s3, 'merge')
        names = [s['name'] for s in op['steps']]
        if online and driver == 'libvirt':
            # A stream or an active commit (whichever side holds less),
            # then the flush pause before the delete.
            assert names[-4:] == ['pause', 'resume', 'delete', 'purge']
            assert 'merge' in names and 'reparent' in names
            assert op['pause_ms'] is not None
        elif online:
            assert names == ['prepare', 'pause', 'merge', 'resume', 'reparent',
                             'delete', 'purge']
            assert op['pause_ms'] is not None
        else:
            assert names == ['merge', 'reparent', 'delete']
        d.write(3, 0xb1)
        d.check()

        # A middle snapshot: its only child is another snapshot.
        s4 = d.snapshot('s4')
        d.write(4, 0xb2)
        d.delete(s2, 'merge')
        d.check()
        assert d.visible()[s4]['parent_id'] == s1

        # Revert to s1: the tree branches, s1 now has two children.
        d.revert(s1)
        d.write(5, 0xc1)
        d.check()
        op = d.delete(s1, 'logical')
        assert [s['name'] for s in op['steps']] == [
            'count-children', 'delete-logically']
        assert s1 not in d.visible()
        d.check()

        # s4 lost its live image to the revert: a leaf, deleted physically.
        # That leaves s1 with one child, and the conductor finishes it.
        d.delete(s4, 'physical')
        auto = d.wait_deferred_done(s1)
        assert auto['status'] == 'succeeded', auto
        assert auto['mode'] == 'merge'
        d.model.forget(s1)
        d.check()
        assert d.visible() == {}

        # The root: a lone snapshot merged into the live image (flatten).
        s5 = d.snapshot('s5')
        d.write(6, 0xd1)
        d.delete(s5, 'merge')
        d.check()
        assert tree_check.images.backing_file(d.active_image()) is None

        # A snapshot that was never taken (error) goes with its record.
        return d
    finally:
        d.close()


@pytest.mark.parametrize('online', [True, False], ids=['running', 'offline'])
def test_every_branch_over_rabbitmq(tmp_path, rabbit_url, postgres_url,
                                    online):
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url)) as dep:
        run_every_branch(dep, tmp_path, postgres_url, online)


def test_every_branch_on_libvirt(libvirt_up, tmp_path, rabbit_url,
                                 postgres_url):
    """The same branches on a running libvirt domain (``[agent] driver =
    libvirt``, registered by domain).
    """
    pytest.importorskip('libvirt')
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url,
            extra=libvirt_vm.EXTRA)) as dep:
        run_every_branch(dep, tmp_path, postgres_url, True, 'libvirt')


def test_every_branch_in_process(inprocess, tmp_path, conf):
    run_every_branch(inprocess, tmp_path, db.CONF.database.connection,
                     online=True)


def test_admin_cancels_a_merge_while_it_copies(tmp_path, rabbit_url,
                                               postgres_url):
    """A merge copying at [agent] merge_rate_limit_mb is cancelled by an
    admin: it fails with "cancelled", the VM runs, the tree and every
    layer are as before, and the same delete works afterwards.
    """
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url,
            extra='[agent]\nmerge_rate_limit_mb = 1\n')) as dep:
        d = tenant.TenantDriver(dep, tmp_path, postgres_url, online=True)
        try:
            for slot in range(4):
                d.write(slot, 0xa0 + slot)
            s1 = d.snapshot('s1')
            for slot in range(4, 10):   # more in the live image: s1 streams
                d.write(slot, 0xb0 + slot)
            op = dep.ok('DELETE', '/v1/snapshots/%s' % s1,
                        status=202)['operation']
            assert op['mode'] == 'merge'
            path = '/v1/operations/%s/cancel' % op['id']
            assert fixtures.api_error(dep, 'POST', path) == (403, 'forbidden')
            deadline = time.monotonic() + 30
            while not dep.ok('GET', '/v1/operations/%s' % op['id'])[
                    'operation']['progress']:
                assert time.monotonic() < deadline, 'the copy never began'
                time.sleep(0.05)
            dep.ok('POST', path, token='admin-token', status=202)
            op = dep.wait_operation(op['id'])
            assert op['status'] == 'failed', op
            assert 'cancelled' in op['error']
            assert [s['status'] for s in op['steps'] if s['name'] ==
                    'prepare'] == ['failed']
            assert d.visible()[s1]['status'] == 'available'
            d.check()
            assert fixtures.api_error(dep, 'POST', path,
                                      token='admin-token') == (
                409, 'not_cancellable')
            d.delete(s1, 'merge')
            d.check()
        finally:
            d.close()
