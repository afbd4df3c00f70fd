"""Registration by libvirt domain (``driver: libvirt``), against the
in-process deployment whose agent's driver is made to list domains."""

import pytest

from conductor import agent_versions
from conductor.db import api as db
from conductor.db import models
from livesnap_tools import fixtures

_err = fixtures.api_error
UUID1 = '0b5ab3a1-1c7e-4a39-9d2a-000000000001'
UUID2 = '0b5ab3a1-1c7e-4a39-9d2a-000000000002'


@pytest.fixture
def dep(inprocess):
    """Two domains on the agent's host: vm1 (vda, vdb), vm2 (vda)."""
    d = inprocess.image_dir

    def loc(uuid, target, name):
        return {'driver': 'libvirt', 'domain': uuid, 'target': target,
                'path': '%s/%s' % (d, name)}

    vms = [{'name': 'vm1', 'uuid': UUID1, 'running': True,
            'disks': [{'name': 'vda', 'locator': loc(UUID1, 'vda', 'a')},
                      {'name': 'vdb', 'locator': loc(UUID1, 'vdb', 'b')}]},
           {'name': 'vm2', 'uuid': UUID2, 'running': False,
            'disks': [{'name': 'vda', 'locator': loc(UUID2, 'vda', 'c')}]}]
    inprocess.vms = vms
    inprocess.agent.runner.driver.list_vms = lambda: vms
    return inprocess


def _spec(domain, id='srv-lv', **extra):
    spec = {'id': id, 'name': 'lv', 'project_id': 'p1',
            'host': fixtures.HOST, 'driver': 'libvirt', 'domain': domain}
    spec.update(extra)
    return {'server': spec}


def test_register_by_name_and_list_unregistered(dep):
    listed = dep.ok('GET', '/v1/hosts/%s/domains' % fixtures.HOST,
                    token='admin-token')['domains']
    assert [x['name'] for x in listed] == ['vm1', 'vm2']
    assert listed[0]['disks'] == [
        {'name': 'vda', 'path': dep.image_dir + '/a'},
        {'name': 'vdb', 'path': dep.image_dir + '/b'}]
    server = dep.ok('POST', '/v1/servers', _spec('vm1'),
                    token='admin-token', status=201)['server']
    assert sorted(x['name'] for x in server['disks']) == ['vda', 'vdb']
    with db.transaction() as s:
        row = s.get(models.Server, 'srv-lv')
        assert row.driver == 'libvirt' and row.qmp_socket is None
        locs = {x.name: x.locator for x in row.disks}
    assert locs['vdb'] == dep.vms[0]['disks'][1]['locator']
    listed = dep.ok('GET', '/v1/hosts/%s/domains' % fixtures.HOST,
                    token='admin-token')['domains']
    assert [x['name'] for x in listed] == ['vm2']
    # The same domain again, by UUID: taken.
    assert _err(dep, 'POST', '/v1/servers', _spec(UUID1.upper(), id='x'),
                token='admin-token') == (409, 'conflict')


def test_register_by_uuid(dep):
    server = dep.ok('POST', '/v1/servers', _spec(UUID2),
                    token='admin-token', status=201)['server']
    assert [x['name'] for x in server['disks']] == ['vda']


def test_unknown_domain_and_paths_outside(dep):
    assert _err(dep, 'POST', '/v1/servers', _spec('nope'),
                token='admin-token') == (400, 'bad_request')
    dep.vms[1]['disks'][0]['locator']['path'] = '/etc/passwd'
    assert _err(dep, 'POST', '/v1/servers', _spec('vm2'),
                token='admin-token') == (400, 'bad_request')
    assert _err(dep, 'GET', '/v1/hosts/nohost/domains',
                token='admin-token') == (404, 'not_found')


def test_schema(dep):
    for body in (_spec('vm1', disks=[{'name': 'vda', 'path': '/x/y'}]),
                 _spec('vm1', qmp_socket='/run/x'),
                 {'server': {'id': 'a', 'name': 'a', 'project_id': 'p1',
                             'host': fixtures.HOST, 'driver': 'libvirt'}},
                 {'server': {'id': 'a', 'name': 'a', 'project_id': 'p1',
                             'host': fixtures.HOST, 'domain': 'vm1',
                             'disks': [{'name': 'd', 'path': '/x/y'}]}}):
        assert _err(dep, 'POST', '/v1/servers', body,
                    token='admin-token') == (400, 'bad_request'), body


def test_members_may_not(dep):
    assert _err(dep, 'GET', '/v1/hosts/%s/domains' % fixtures.HOST) == (
        403, 'forbidden')
    assert _err(dep, 'POST', '/v1/servers', _spec('vm1'))[0] == 403


def test_older_agent_is_refused(dep, monkeypatch):
    monkeypatch.setattr(agent_versions, 'capabilities',
                        lambda host: frozenset())
    status, code = _err(dep, 'POST', '/v1/servers', _spec('vm1'),
                        token='admin-token')
    assert (status, code) == (409, 'conflict')
    status, payload = dep.api('POST', '/v1/servers', _spec('vm1'),
                              'admin-token')
    assert '1.5' in payload['error']['message']


def test_a_qemu_agent_is_refused(dep):
    dep.vms[0]['disks'][0]['locator'] = {
        'driver': 'qemu', 'qmp_socket': None,
        'path': dep.image_dir + '/a'}
    status, payload = dep.api('POST', '/v1/servers', _spec('vm1'),
                              'admin-token')
    assert status == 400
    assert 'libvirt driver' in payload['error']['message']
