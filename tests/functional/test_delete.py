"""The child-count rule end to end, on a running VM and on an offline disk.

Every branch: the newest snapshot (its child is the live image), a middle
snapshot (its child is another snapshot), a snapshot with two children
after a revert (logical, then finished by the conductor), a leaf with no
children, and the root.  After each step the invariants of
tests.functional.tree_check hold.
"""

import pytest

from conductor.db import api as db
from livesnap import testvm
from tests import fixtures
from tests.functional import scenarios
from tests.functional import tree_check

pytestmark = pytest.mark.functional

MiB = tree_check.MiB


class Driver(object):
    """Drives one server through the API and keeps the content model."""

    def __init__(self, dep, tmp_path, database_url, online):
        self.dep = dep
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.online = online
        self.model = tree_check.DiskModel()
        self.vm = None
        self.image = scenarios.new_base_image(dep, 'srv1')
        self.sock = scenarios.short_socket_path('srv1')
        if online:
            self.vm = testvm.TestVM(self.image, self.sock, name='srv1')
            self.vm.start()
        dep.register_server('srv1', self.image,
                            qmp_socket=self.sock if online else None)

    def active_image(self):
        return self.dep.ok('GET', '/v1/servers/srv1')['server']['disks'][0][
            'active_image']

    def write(self, slot, pattern):
        if self.vm is not None and self.vm.alive():
            self.vm.write(pattern, slot * MiB, MiB)
        else:
            tree_check.write_offline(self.active_image(), pattern, slot)
        self.model.write(slot, pattern)

    def snapshot(self, name):
        snap_id, op = scenarios.create_snapshot(self.dep, 'srv1', name)
        assert op['status'] == 'succeeded', op
        self.model.snapshot(snap_id)
        return snap_id

    def delete(self, snap_id, mode):
        op = self.dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                         status=202)['operation']
        assert op['mode'] == mode, op
        op = self.dep.wait_operation(op['id'])
        assert op['status'] == 'succeeded', op
        if mode != 'logical':
            self.model.forget(snap_id)
        return op

    def revert(self, snap_id):
        if self.vm is not None:
            status, body = self.dep.api('POST',
                                        '/v1/snapshots/%s/revert' % snap_id)
            assert status == 409, body
            assert body['error']['code'] == 'server_running'
            self.vm.shutdown()
        op = self.dep.ok('POST', '/v1/snapshots/%s/revert' % snap_id,
                         status=202)['operation']
        op = self.dep.wait_operation(op['id'])
        assert op['status'] == 'succeeded', op
        self.model.revert(snap_id)
        if self.vm is not None:
            self.vm = testvm.TestVM(self.active_image(), self.sock,
                                    name='srv1')
            self.vm.start()

    def check(self):
        tree_check.check_invariants(self.database_url, 'srv1', self.model,
                                    self.dep.image_dir, vm=self.vm)
        if self.vm is not None:
            assert self.vm.status() == 'running'

    def visible(self):
        return {s['id']: s for s in self.dep.ok(
            'GET', '/v1/servers/srv1/snapshots')['snapshots']}

    def wait_deferred_done(self, snap_id, timeout=60):
        """Wait for the conductor's own operation on ``snap_id``."""
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ops = [o for o in self.dep.ok('GET', '/v1/operations')[
                'operations'] if o['snapshot_id'] == snap_id
                and o['requested_by'] == 'conductor']
            if ops and ops[0]['status'] in ('succeeded', 'failed'):
                return ops[0]
            time.sleep(0.1)
        raise AssertionError('deferred deletion of %s never finished'
                             % snap_id)

    def close(self):
        if self.vm is not None:
            self.vm.kill()


def run_every_branch(dep, tmp_path, database_url, online):
    d = Driver(dep, tmp_path, database_url, online)
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
        if online:
            assert names == ['prepare', 'pause', 'merge', 'reparent',
                             'delete', 'resume']
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
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url)
    try:
        dep.start()
        run_every_branch(dep, tmp_path, postgres_url, online)
    except Exception:
        print('--- conductor log ---\n' + dep.log('conductor'))
        print('--- agent log ---\n' + dep.log('agent'))
        raise
    finally:
        dep.stop()


def test_every_branch_in_process(inprocess, tmp_path, conf):
    run_every_branch(inprocess, tmp_path, db.CONF.database.connection,
                     online=True)
