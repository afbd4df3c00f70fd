"""Property-based test of the snapshot tree (hypothesis).

Random sequences of write, create, delete and revert run both on a model
of the tree and on real offline qcow2 images through the conductor and
agent.  After every step the model predicts the deletion mode, and the
invariants of tests.functional.tree_check hold: every layer holds what
was written before it, the chains equal the tree, every image is clean,
and files and records match one to one.
"""

import os
import time
import uuid

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import pytest

from agent import images
from conductor.db import api as db
from tests.functional import tree_check

pytestmark = pytest.mark.functional


class TreeModel(tree_check.DiskModel):
    """Content model plus the tree: parents, the live image's base."""

    def __init__(self):
        super().__init__()
        self.parent = {}
        self.base = None
        self.hidden = set()

    def snapshot(self, snap_id):
        super().snapshot(snap_id)
        self.parent[snap_id] = self.base
        self.base = snap_id

    def children(self, snap_id):
        kids = [s for s, p in self.parent.items() if p == snap_id]
        return len(kids) + (1 if self.base == snap_id else 0)

    def delete(self, snap_id):
        """Apply the child-count rule; return the mode it must choose."""
        n = self.children(snap_id)
        if n >= 2:
            self.hidden.add(snap_id)
            return 'logical'
        self._remove(snap_id)
        return 'physical' if n == 0 else 'merge'

    def _remove(self, snap_id):
        up = self.parent.pop(snap_id)
        for s, p in list(self.parent.items()):
            if p == snap_id:
                self.parent[s] = up
        if self.base == snap_id:
            self.base = up
        self.forget(snap_id)
        self.hidden.discard(snap_id)

    def revert(self, snap_id):
        super().revert(snap_id)
        self.base = snap_id

    def finish_deferred(self):
        """The conductor finishes hidden nodes left with <= 1 child."""
        changed = True
        while changed:
            changed = False
            for s in sorted(self.hidden):
                if self.children(s) <= 1:
                    self._remove(s)
                    changed = True

    def visible(self):
        return sorted(s for s in self.parent if s not in self.hidden)


steps = st.lists(st.one_of(
    st.tuples(st.just('write'), st.integers(0, tree_check.SLOTS - 1),
              st.integers(1, 255)),
    st.tuples(st.just('snapshot')),
    st.tuples(st.just('delete'), st.integers(0, 50)),
    st.tuples(st.just('revert'), st.integers(0, 50)),
), min_size=1, max_size=10)


def _quiesce(dep, server_id, expected_ids, timeout=60):
    """Wait until no operation runs on the server and the conductor has
    finished every deferred deletion the model expects it to.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ops = dep.ok('GET', '/v1/operations?server_id=%s' % server_id)[
            'operations']
        disk, snaps = tree_check.db_rows(db.CONF.database.connection,
                                         server_id)
        ids = sorted(x.id for x in snaps if x.status != 'error')
        if disk.operation_id is None and ids == expected_ids and all(
                o['status'] in ('succeeded', 'failed') for o in ops):
            return ops
        time.sleep(0.05)
    raise AssertionError('server %s never became idle' % server_id)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(program=steps)
def test_random_tree_operations(inprocess, program):
    dep = inprocess
    server_id = 'p-' + uuid.uuid4().hex[:10]
    image_dir = os.path.join(dep.image_dir, server_id)
    os.makedirs(image_dir)
    base = os.path.join(image_dir, 'base.qcow2')
    images.create_base(base, tree_check.SLOTS * tree_check.MiB)
    dep.register_server(server_id, base)
    model = TreeModel()

    def active():
        return dep.ok('GET', '/v1/servers/%s' % server_id,
                      token='admin-token')['server']['disks'][0][
                          'active_image']

    for step in program:
        if step[0] == 'write':
            tree_check.write_offline(active(), step[2], step[1])
            model.write(step[1], step[2])
        elif step[0] == 'snapshot':
            body = dep.ok('POST', '/v1/servers/%s/snapshots' % server_id,
                          {'snapshot': {'name': 'n', 'disk': 'vda'}},
                          status=202)
            op = dep.wait_operation(body['operation']['id'])
            assert op['status'] == 'succeeded', op
            model.snapshot(body['snapshot']['id'])
        elif model.visible():
            target = model.visible()[step[1] % len(model.visible())]
            if step[0] == 'delete':
                expected = model.delete(target)
                op = dep.ok('DELETE', '/v1/snapshots/%s' % target,
                            status=202)['operation']
                assert op['mode'] == expected
            else:
                op = dep.ok('POST', '/v1/snapshots/%s/revert' % target,
                            status=202)['operation']
                model.revert(target)
            op = dep.wait_operation(op['id'])
            assert op['status'] == 'succeeded', op
            model.finish_deferred()
        ops = _quiesce(dep, server_id, sorted(model.parent))
        assert all(o['status'] == 'succeeded' for o in ops), ops
        listed = sorted(s['id'] for s in dep.ok(
            'GET', '/v1/servers/%s/snapshots' % server_id)['snapshots'])
        assert listed == model.visible()
        tree_check.check_invariants(db.CONF.database.connection, server_id,
                                    model, image_dir)
