"""End to end on libvirt: a deployment (conductor and agent as processes,
RabbitMQ, PostgreSQL) whose agent runs ``[agent] driver = libvirt``, a
TCG domain registered by domain, then through the REST API: online
creates, the three delete modes (merge, logical with its deferred finish,
physical), a revert of the shut-off domain, the data of every layer read
with ``qemu-io -r -U``, and the agent SIGKILLed inside the pause.

libvirtd is started for the run by the session fixture ``libvirt_up``
(tests/conftest.py, livesnap_tools/libvirtd.py) if it does not run (root
only); without libvirt the module is skipped.
"""

import datetime
import json
import os
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET

import pytest

from agent import images
from livesnap import rpc
from livesnap_tools import fixtures
from livesnap_tools import libvirtd
from tests.functional.test_libvirt_driver import assert_content
from tests.functional.test_libvirt_driver import write

pytestmark = pytest.mark.functional

libvirt = pytest.importorskip('libvirt')

SIZE = 16 * 1024 * 1024
MiB = 1024 * 1024
EXTRA = ('driver = libvirt\n'
         '[libvirt]\nuri = %s\nsnapshot_pause = suspend\n'
         'job_poll_interval = 0.05\n'
         '[conductor]\nperiodic_interval = 0.5\nhost_down_time = 3\n'
         'agent_call_timeout = 5\n' % libvirtd.URI)
ADMIN = 'admin-token'


@pytest.fixture
def dep(libvirt_up, tmp_path, rabbit_url, postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    d = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url,
                                   extra=EXTRA)
    try:
        d.start()
        yield d
    except BaseException:
        for name in d.procs:
            print('--- %s log ---\n%s' % (name, d.log(name)))
        raise
    finally:
        d.stop()
        rpc.cleanup()


class Domain(object):
    """A persistent TCG domain with one disk, vda, in the image dir."""

    def __init__(self, imgdir):
        self.conn = libvirt.open(libvirtd.URI)
        self.uuid = str(uuid.uuid4())
        self.name = 'lsapi-%s' % self.uuid[:8]
        self.base = os.path.join(imgdir, 'vda-base.qcow2')
        images.create_base(self.base, SIZE)
        write(self.base, 0xa1, 0, MiB)
        self.dom = self.conn.defineXML(libvirtd.domain_xml(
            self.name, self.uuid, [('vda', self.base)]))

    def chain(self):
        """The vda chain, live layer first (paths)."""
        from agent.driver.libvirt import guest as lvguest
        root = ET.fromstring(self.dom.XMLDesc(0))
        for d in root.findall('./devices/disk'):
            if d.find('target').get('dev') == 'vda':
                return lvguest.chain(d)
        raise AssertionError('no vda')

    def state(self):
        return self.dom.state()[0]

    def start(self):
        self.dom.create()

    def stop(self):
        if self.dom.isActive():
            self.dom.destroy()

    def cleanup(self):
        try:
            self.stop()
            self.dom.undefine()
        finally:
            self.conn.close()


@pytest.fixture
def domain(dep):
    d = Domain(dep.image_dir)
    yield d
    d.cleanup()


def _register(dep, domain, by):
    listed = dep.ok('GET', '/v1/hosts/%s/domains' % fixtures.HOST,
                    token=ADMIN)['domains']
    assert domain.name in [x['name'] for x in listed]
    server = dep.ok('POST', '/v1/servers', {'server': {
        'id': 'srv1', 'name': 'srv1', 'project_id': 'p1',
        'host': fixtures.HOST, 'driver': 'libvirt', 'domain': by}},
        token=ADMIN, status=201)['server']
    assert [x['name'] for x in server['disks']] == ['vda']
    listed = dep.ok('GET', '/v1/hosts/%s/domains' % fixtures.HOST,
                    token=ADMIN)['domains']
    assert domain.name not in [x['name'] for x in listed]
    return server


def _create(dep, name):
    out = dep.ok('POST', '/v1/servers/srv1/snapshots',
                 {'snapshot': {'name': name, 'disk': 'vda'}}, status=202)
    op = dep.wait_operation(out['operation']['id'], timeout=180)
    assert op['status'] == 'succeeded', op
    return out['snapshot']['id'], op


def _delete(dep, snap_id):
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                status=202)['operation']
    return dep.wait_operation(op['id'], timeout=180)


def _gone(dep, snap_id, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        status, _ = dep.api('GET', '/v1/snapshots/%s' % snap_id, None,
                            ADMIN)
        if status == 404:
            return
        assert time.monotonic() < deadline, '%s never finished' % snap_id
        time.sleep(0.2)


def _backing(path):
    out = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out).get('backing-filename')


def test_lifecycle_through_the_api(dep, domain):
    domain.start()
    _register(dep, domain, domain.name)

    # S1 freezes the base (0xa1 at 0); a new live layer L1.
    s1, op = _create(dep, 's1')
    assert domain.state() == libvirt.VIR_DOMAIN_RUNNING
    # Its moment: the pause, on the clock libvirt's events pass on.
    taken = dep.ok('GET', '/v1/snapshots/%s' % s1)['snapshot']
    when = [datetime.datetime.fromisoformat(t.rstrip('Z')) for t in (
        taken['created_at'], taken['taken_at'], op['updated_at'])]
    assert when == sorted(when), (taken, op)
    l1, base = domain.chain()
    assert base == domain.base
    # Data written into L1 while the domain is off (nothing to boot).
    domain.stop()
    write(l1, 0xb2, MiB, MiB)
    domain.start()
    s2, _ = _create(dep, 's2')
    l2, l1_again, _ = domain.chain()
    assert l1_again == l1
    assert_content(base, [(0xa1, 0, MiB), (0x00, MiB, MiB)])
    assert_content(l1, [(0xa1, 0, MiB), (0xb2, MiB, MiB)])
    assert_content(l2, [(0xa1, 0, MiB), (0xb2, MiB, MiB)])

    # S2 has one child, the live layer: merge, online.
    op = _delete(dep, s2)
    assert (op['status'], op['mode']) == ('succeeded', 'merge'), op
    assert domain.state() == libvirt.VIR_DOMAIN_RUNNING
    chain = domain.chain()
    assert len(chain) == 2 and chain[-1] == base
    assert_content(chain[0], [(0xa1, 0, MiB), (0xb2, MiB, MiB)])

    # S3 on top; revert the shut-off domain to S1.
    s3, _ = _create(dep, 's3')
    domain.stop()
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % s1,
                status=202)['operation']
    op = dep.wait_operation(op['id'], timeout=180)
    assert op['status'] == 'succeeded', op
    live, = domain.chain()  # shut off: the definition names the top
    assert _backing(live) == base
    assert_content(live, [(0xa1, 0, MiB), (0x00, MiB, MiB)])
    domain.start()

    # S1 has two children (S3 and the live layer): logical.
    op = _delete(dep, s1)
    assert (op['status'], op['mode']) == ('succeeded', 'logical'), op
    # S3 has none: physical; S1 is then finished by the conductor.
    op = _delete(dep, s3)
    assert (op['status'], op['mode']) == ('succeeded', 'physical'), op
    _gone(dep, s1)
    assert domain.state() == libvirt.VIR_DOMAIN_RUNNING
    chain = domain.chain()
    assert len(chain) == 1
    assert_content(chain[0], [(0xa1, 0, MiB), (0x00, MiB, MiB)])
    assert dep.ok('GET', '/v1/servers/srv1/snapshots')['snapshots'] == []


def test_agent_killed_inside_the_pause(dep, domain):
    domain.start()
    _register(dep, domain, domain.uuid)
    dep.kill('agent')
    dep.start_agent(fault_points=['create_snapshot:pause:after'])
    out = dep.ok('POST', '/v1/servers/srv1/snapshots',
                 {'snapshot': {'name': 's1', 'disk': 'vda'}}, status=202)
    assert dep.wait_exit('agent', timeout=180) == -9
    # Killed right after the suspend: the domain is paused now.
    assert domain.state() == libvirt.VIR_DOMAIN_PAUSED
    dep.start_agent()
    deadline = time.monotonic() + 120
    while domain.state() != libvirt.VIR_DOMAIN_RUNNING:
        assert time.monotonic() < deadline, 'the domain stays paused'
        time.sleep(0.1)
    op = dep.wait_operation(out['operation']['id'], timeout=180)
    assert op['status'] in ('succeeded', 'failed'), op
    if op['status'] == 'failed':
        assert op['error'], op
    # The disk is free again: a new snapshot goes through.
    _create(dep, 's2')
    assert domain.state() == libvirt.VIR_DOMAIN_RUNNING


def test_snapshot_group_through_the_api(dep, libvirt_up):
    """A two-disk domain: ``POST /v1/servers/{id}/snapshot-groups`` is one
    operation whose one snapshotCreateXML switches both disks under one
    suspend (before, the group was accepted and then failed on
    libvirt).
    """
    conn = libvirt.open(libvirtd.URI)
    dom_uuid = str(uuid.uuid4())
    name = 'lsgrp-%s' % dom_uuid[:8]
    paths = {}
    for target in ('vda', 'vdb'):
        paths[target] = os.path.join(dep.image_dir, '%s-base.qcow2' % target)
        images.create_base(paths[target], SIZE)
    write(paths['vda'], 0xa1, 0, MiB)
    write(paths['vdb'], 0xb1, 0, MiB)
    dom = conn.defineXML(libvirtd.domain_xml(
        name, dom_uuid, sorted(paths.items())))
    try:
        dom.create()
        server = dep.ok('POST', '/v1/servers', {'server': {
            'id': 'srv2', 'name': 'srv2', 'project_id': 'p1',
            'host': fixtures.HOST, 'driver': 'libvirt', 'domain': name}},
            token=ADMIN, status=201)['server']
        assert [x['name'] for x in server['disks']] == ['vda', 'vdb']
        out = dep.ok('POST', '/v1/servers/srv2/snapshot-groups',
                     {'snapshot_group': {'name': 'both'}}, status=202)
        op = dep.wait_operation(out['operation']['id'], timeout=180)
        assert op['status'] == 'succeeded', op
        assert [s['name'] for s in op['steps']] == [
            'prepare', 'prepare', 'pause', 'snapshot', 'resume']
        assert op['pause_ms'] is not None
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        group = dep.ok('GET', '/v1/snapshot-groups/%s'
                       % out['snapshot_group']['id'])['snapshot_group']
        assert {s['status'] for s in group['snapshots']} == {'available'}
        root = ET.fromstring(dom.XMLDesc(0))
        from agent.driver.libvirt import guest as lvguest
        chains = {d.find('target').get('dev'): lvguest.chain(d)
                  for d in root.findall('./devices/disk')}
        for target in ('vda', 'vdb'):
            live, base = chains[target]
            assert base == paths[target] and live != base
            assert _backing(live) == base
        dom.destroy()
        assert_content(chains['vda'][0], [(0xa1, 0, MiB)])
        assert_content(chains['vdb'][0], [(0xb1, 0, MiB)])
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()
