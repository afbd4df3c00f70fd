"""A tenant's view of one server, driven through the REST API, with the
model of what every layer must contain (tests.functional.tree_check)."""

import time

from livesnap_tools import fixtures
from livesnap_tools import testvm
from tests.functional import libvirt_vm
from tests.functional import scenarios
from tests.functional import tree_check

MiB = tree_check.MiB


class TenantDriver(object):
    """Drives one server through the API and keeps the content model.

    :param driver: ``qemu`` (a TestVM of its own, registered with its
        QMP socket) or ``libvirt`` (a libvirt domain, registered by
        domain; the deployment's agent runs ``libvirt_vm.EXTRA``).
    """

    def __init__(self, dep, tmp_path, database_url, online, driver='qemu'):
        self.dep = dep
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.online = online
        self.driver = driver
        self.model = tree_check.DiskModel()
        self.vm = None
        self.image = scenarios.new_base_image(dep, 'srv1')
        self.sock = scenarios.short_socket_path('srv1')
        if driver == 'libvirt':
            # Defined either way (the agent finds its disks by domain);
            # running only when online.
            self.domain = libvirt_vm.LibvirtVM(self.image, 'srv1')
            if online:
                self.vm = self.domain.start()
        elif online:
            self.vm = testvm.TestVM(self.image, self.sock, name='srv1')
            self.vm.start()
        try:
            if driver == 'libvirt':
                dep.ok('POST', '/v1/servers', {'server': {
                    'id': 'srv1', 'name': 'srv1', 'project_id': 'p1',
                    'host': fixtures.HOST, 'driver': 'libvirt',
                    'domain': self.domain.name}},
                    token='admin-token', status=201)
            else:
                dep.register_server('srv1', self.image,
                                    qmp_socket=self.sock if online else None)
        except BaseException:
            self.close()
            raise

    def active_image(self):
        return self.dep.ok('GET', '/v1/servers/srv1', token='admin-token')[
            'server']['disks'][0]['active_image']

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
        if self.vm is not None and self.driver == 'libvirt':
            # The driver pointed the definition at the new live layer.
            self.vm.start()
        elif self.vm is not None:
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
        if self.driver == 'libvirt':
            self.domain.kill()
        elif self.vm is not None:
            self.vm.kill()
