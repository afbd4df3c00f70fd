"""Many tenants at once, on PostgreSQL (and MariaDB), with conductor and
agent as separate processes over RabbitMQ.

Each tenant has a project, a server and a disk of its own (a few run a
QEMU VM, the others are offline so they can revert), and a thread that
loops over HTTP:

* create a snapshot, then at once delete its parent, retrying while the
  disk is busy with the tenant's own create: the delete is decided on
  the rows that create leaves, so a snapshot with one child is merged,
  never deleted logically;
* (offline) revert to a snapshot, delete it (two children: logical),
  delete its other child, which makes the conductor finish the first by
  itself, and at once create and delete again: requests that find the
  disk busy with the conductor's own work wait for it (202, ``pending``),
  they are never refused with 409.

After every round the tenant's tree is checked against the files
(tests.functional.tree_check); at the end no operation is left
``pending`` or ``running`` and every disk is free.
"""

import os
import re
import threading
import time

import pytest
import sqlalchemy as sa

from agent import images
from livesnap_tools import fixtures
from livesnap_tools import testvm
from tests.functional import scenarios
from tests.functional import tree_check

pytestmark = pytest.mark.functional

TENANTS = 8
ONLINE = 2          # of them with a running QEMU
ROUNDS = 3
UUID = re.compile(r'[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
                  r'[0-9a-f]{12}')


class Tenant(object):
    """One project with one server, driven over HTTP by its own thread."""

    def __init__(self, dep, index, online):
        self.dep = dep
        self.name = 't%d' % index
        self.token = '%s-token' % self.name
        self.server = 'srv-%s' % self.name
        self.online = online
        self.model = tree_check.DiskModel()
        self.image_dir = os.path.join(dep.image_dir, self.name)
        os.makedirs(self.image_dir)
        base = os.path.join(self.image_dir, 'base.qcow2')
        images.create_base(base, tree_check.SLOTS * tree_check.MiB)
        self.vm = None
        sock = None
        if online:
            sock = scenarios.short_socket_path(self.name)
            self.vm = testvm.TestVM(base, sock, name=self.name).start()
        dep.register_server(self.server, base, qmp_socket=sock,
                            project=self.name)
        self.pattern = index * 16
        self.problems = []
        self.stats = {'requests': 0, 'waited': 0, 'busy_own': 0,
                      'merge': 0, 'logical': 0, 'physical': 0}

    # ------------------------------------------------------------ HTTP

    def call(self, method, path, body=None):
        """One request; 409 ``disk_busy`` is retried while the disk is
        busy with this tenant's own work and recorded as a problem when
        it is the conductor's.
        """
        while True:
            self.stats['requests'] += 1
            status, payload = self.dep.api(method, path, body, self.token)
            if status >= 500:
                self.problems.append('%s %s: %s %s' % (method, path, status,
                                                       payload))
                raise AssertionError(self.problems[-1])
            if status != 409 or payload['error']['code'] != 'disk_busy':
                if status >= 400:
                    raise fixtures.APIError(status, payload)
                if payload.get('operation', {}).get('status') == 'pending':
                    self.stats['waited'] += 1
                return payload
            found = UUID.search(payload['error']['message'])
            holder = found.group(0) if found else None
            op = self.dep.ok('GET', '/v1/operations/%s' % holder,
                             token=self.token)['operation'] if holder \
                else {'requested_by': 'unknown'}
            if op['requested_by'] != 'tenant':
                self.problems.append(
                    '%s %s refused (409) for the conductor\'s operation %s'
                    % (method, path, holder))
            self.stats['busy_own'] += 1
            time.sleep(0.01)

    def wait(self, op_id):
        op = self.dep.wait_operation(op_id, token=self.token, timeout=90)
        if op['status'] != 'succeeded':
            self.problems.append('operation %s: %s' % (op_id, op))
            raise AssertionError(self.problems[-1])
        return op

    def active_image(self):
        return self.dep.ok('GET', '/v1/servers/%s' % self.server,
                           token='admin-token')['server']['disks'][0][
            'active_image']

    # ------------------------------------------------------- the steps

    def write(self, slot):
        self.pattern = (self.pattern + 1) % 255 or 1
        if self.vm is not None:
            self.vm.write(self.pattern, slot * tree_check.MiB,
                          tree_check.MiB)
        else:
            tree_check.write_offline(self.active_image(), self.pattern, slot)
        self.model.write(slot, self.pattern)

    def post_snapshot(self):
        body = self.call('POST', '/v1/servers/%s/snapshots' % self.server,
                         {'snapshot': {'name': 'n', 'disk': 'vda'}})
        self.model.snapshot(body['snapshot']['id'])
        return body['snapshot']['id'], body['operation']['id']

    def create(self):
        snap, op = self.post_snapshot()
        self.wait(op)
        return snap

    def delete(self, snap, mode, wait=True):
        op = self.call('DELETE', '/v1/snapshots/%s' % snap)['operation']
        if op['status'] != 'pending' and op['mode'] != mode:
            self.problems.append('delete of %s: mode %s, expected %s'
                                 % (snap, op['mode'], mode))
        if mode != 'logical':
            self.model.forget(snap)
        if wait:
            op = self.wait(op['id'])
            if op['mode'] != mode:
                self.problems.append('delete of %s ended as %s, expected %s'
                                     % (snap, op['mode'], mode))
            self.stats[op['mode']] = self.stats.get(op['mode'], 0) + 1
        return op

    def revert(self, snap):
        op = self.call('POST', '/v1/snapshots/%s/revert' % snap)['operation']
        self.wait(op['id'])
        self.model.revert(snap)

    def quiesce(self, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ops = self.dep.ok('GET', '/v1/operations?server_id=%s'
                              % self.server, token=self.token)['operations']
            disk = self.dep.ok('GET', '/v1/servers/%s' % self.server,
                               token=self.token)['server']['disks'][0]
            if not disk['busy'] and all(
                    o['status'] in ('succeeded', 'failed') for o in ops):
                return ops
            time.sleep(0.05)
        raise AssertionError('%s never became idle' % self.server)

    def check(self):
        tree_check.check_invariants(self.dep.database_url, self.server,
                                    self.model, self.image_dir, vm=self.vm)

    def round(self):
        # A create, and at once the delete of its parent.
        self.write(0)
        a = self.create()
        self.write(1)
        b, b_op = self.post_snapshot()
        self.delete(a, 'merge')
        self.wait(b_op)
        self.write(2)
        if self.online:
            self.delete(b, 'merge')
        else:
            # Branch at b, delete it logically, free it: the conductor
            # merges it by itself while this tenant goes on.
            c = self.create()
            self.revert(b)
            self.write(3)
            self.delete(b, 'logical')
            self.delete(c, 'physical')
            d, d_op = self.post_snapshot()
            self.wait(d_op)
            self.delete(d, 'merge')
        self.quiesce()
        self.check()

    def run(self):
        try:
            for _ in range(ROUNDS):
                self.round()
        except Exception as exc:
            self.problems.append('%s: %r' % (self.name, exc))

    def close(self):
        if self.vm is not None:
            self.vm.kill()


@pytest.mark.parametrize('backend', ['postgresql', 'mariadb'])
def test_many_tenants_at_once(request, tmp_path, rabbit_url, backend):
    if backend == 'postgresql':
        database_url = request.getfixturevalue('postgres_url')
        fixtures.pg_reset_schema(database_url)
    else:
        database_url = request.getfixturevalue('mariadb_url')
        fixtures.mysql_reset_schema(database_url)
    tokens = {'t%d-token' % i: {'project_id': 't%d' % i,
                                'roles': ['member']}
              for i in range(TENANTS)}
    dep = fixtures.ProcessDeployment(
        tmp_path, rabbit_url, database_url, tokens=tokens,
        extra='[api]\noperations_per_minute = 0\n'
              '[conductor]\nperiodic_interval = 2\n')
    tenants = []
    with fixtures.running(dep):
        try:
            for i in range(TENANTS):
                tenants.append(Tenant(dep, i, online=i < ONLINE))
            threads = [threading.Thread(target=t.run) for t in tenants]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
            problems = [p for t in tenants for p in t.problems]
            assert problems == []
            # Nothing is left running or pending, no disk stays locked.
            engine = sa.create_engine(database_url)
            try:
                with engine.connect() as c:
                    left = c.execute(sa.text(
                        "SELECT id, status FROM operations WHERE status IN "
                        "('pending', 'running')")).all()
                    locked = c.execute(sa.text(
                        'SELECT id FROM disks WHERE operation_id IS NOT '
                        'NULL')).all()
                    by = dict(c.execute(sa.text(
                        'SELECT requested_by, count(*) FROM operations '
                        'GROUP BY requested_by')).all())
            finally:
                engine.dispose()
            assert left == [] and locked == []
            # The conductor did finish deferred deletions by itself.
            assert by.get('conductor', 0) >= (TENANTS - ONLINE) * ROUNDS
            totals = {}
            for t in tenants:
                for k, v in t.stats.items():
                    totals[k] = totals.get(k, 0) + v
            print('many tenants (%s): %s' % (backend, totals))
        finally:
            for t in tenants:
                t.close()
