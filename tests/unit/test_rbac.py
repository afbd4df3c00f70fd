"""The authorisation rules: defaults, the generated sample, a policy file
that overrides them, and 403 versus 404."""

import os

import pytest

from conductor.api import auth
from conductor import exception
from conductor import rbac
from tests.unit import generated

MEMBER_P1 = auth.Credentials('p1', ['member'])
READER_P1 = auth.Credentials('p1', ['reader'])
NOROLE_P1 = auth.Credentials('p1', [])
ADMIN = auth.Credentials('admin', ['admin'])

READ_RULES = ['livesnap:server:list', 'livesnap:server:get',
              'livesnap:snapshot:list',
              'livesnap:snapshot:list:include_deleted',
              'livesnap:snapshot:get', 'livesnap:operation:list',
              'livesnap:operation:get', 'livesnap:policy:list',
              'livesnap:policy:get', 'livesnap:policy:run:list',
              'livesnap:snapshot_group:get']
WRITE_RULES = ['livesnap:snapshot:create', 'livesnap:snapshot:delete',
               'livesnap:snapshot:revert', 'livesnap:snapshot:update',
               'livesnap:snapshot:clone',
               'livesnap:policy:create', 'livesnap:policy:update',
               'livesnap:policy:delete', 'livesnap:snapshot_group:create',
               'livesnap:snapshot_group:delete',
               'livesnap:snapshot_group:revert']
ADMIN_RULES = ['livesnap:server:create', 'livesnap:all_projects',
               'livesnap:operation:unlimited', 'livesnap:host:list',
               'livesnap:host_details', 'livesnap:operation:cancel',
               'livesnap:host:domain:list', 'livesnap:server:delete']


@pytest.fixture(autouse=True)
def fresh_enforcer():
    rbac.reset()
    yield
    rbac.reset()


def test_sample_policy_is_current(tmp_path):
    generated.assert_current(tmp_path, 'oslopolicy-sample-generator',
                             'policy-generator.conf', 'policy.yaml.sample',
                             'tools/gen-policy')


def test_every_rule_is_documented():
    for rule in rbac.list_rules():
        assert rule.description, rule.name
        if rule.name.startswith('livesnap:'):
            assert rule.operations, rule.name


@pytest.mark.parametrize('rule', [
    'livesnap:server:get', 'livesnap:snapshot:list',
    'livesnap:snapshot:create', 'livesnap:snapshot:get',
    'livesnap:snapshot:delete', 'livesnap:snapshot:revert',
    'livesnap:operation:get'])
def test_owner_rules(rule):
    assert rbac.check(MEMBER_P1, rule, 'p1')
    assert not rbac.check(MEMBER_P1, rule, 'p2')
    assert rbac.check(ADMIN, rule, 'p2')


@pytest.mark.parametrize('rule', ADMIN_RULES)
def test_admin_rules(rule):
    assert not rbac.check(MEMBER_P1, rule, 'p1')
    assert not rbac.check(READER_P1, rule, 'p1')
    assert rbac.check(ADMIN, rule, 'p1')


@pytest.mark.parametrize('rule', READ_RULES)
def test_readers_read_their_project(rule):
    assert rbac.check(READER_P1, rule, 'p1')
    assert not rbac.check(READER_P1, rule, 'p2')
    assert rbac.check(MEMBER_P1, rule, 'p1')   # member implies reader
    assert not rbac.check(NOROLE_P1, rule, 'p1')
    assert rbac.check(ADMIN, rule, 'p2')


@pytest.mark.parametrize('rule', WRITE_RULES)
def test_only_members_and_admins_write(rule):
    assert not rbac.check(READER_P1, rule, 'p1')
    assert not rbac.check(NOROLE_P1, rule, 'p1')
    assert rbac.check(MEMBER_P1, rule, 'p1')
    assert not rbac.check(MEMBER_P1, rule, 'p2')
    assert rbac.check(ADMIN, rule, 'p2')


def test_every_livesnap_rule_is_in_one_class():
    names = {r.name for r in rbac.list_rules()
             if r.name.startswith('livesnap:')}
    assert names == set(READ_RULES + WRITE_RULES + ADMIN_RULES)


def test_keystones_implied_roles():
    assert auth.Credentials('p', ['admin']).roles == [
        'admin', 'member', 'reader']
    assert auth.Credentials('p', ['member']).roles == ['member', 'reader']
    assert auth.Credentials('p', ['reader', 'member']).roles == [
        'reader', 'member']
    assert auth.Credentials('p', ['custom']).roles == ['custom']


def test_a_refusal_says_what_who_and_which_rule():
    with pytest.raises(exception.Forbidden) as err:
        rbac.authorize(READER_P1, 'livesnap:snapshot:revert', 'p1')
    assert str(err.value) == (
        'Your token (role reader in project p1) may not revert disks to '
        'snapshots: refused by policy rule livesnap:snapshot:revert.')
    with pytest.raises(exception.Forbidden) as err:
        rbac.authorize(NOROLE_P1, 'livesnap:server:list')
    assert '(no role in project p1) may not list servers' in str(err.value)


def test_scope():
    assert rbac.scope(MEMBER_P1) == 'p1'
    assert rbac.scope(ADMIN) is None


def test_refusal_is_403_to_the_owner_and_404_to_others(conf, tmp_path):
    path = tmp_path / 'policy.yaml'
    path.write_text('"livesnap:snapshot:delete": "role:admin"\n')
    conf.set('policy_file', str(path), group='oslo_policy')
    rbac.reset()
    with pytest.raises(exception.Forbidden):
        rbac.authorize(MEMBER_P1, 'livesnap:snapshot:delete', 'p1')
    with pytest.raises(exception.NotFound):
        rbac.authorize(MEMBER_P1, 'livesnap:snapshot:delete', 'p2')
    rbac.authorize(ADMIN, 'livesnap:snapshot:delete', 'p1')


def test_policy_file_overrides_through_the_api(inprocess, conf, tmp_path):
    """A cloud that lets readers look but not touch, and a registrar role
    that may register servers.
    """
    from agent import images
    from tests.functional import scenarios
    dep = inprocess
    base = os.path.join(dep.image_dir, 'srv1-vda.qcow2')
    images.create_base(base, 4 * scenarios.MiB)
    dep.register_server('srv1', base)
    snap_id, _ = scenarios.create_snapshot(dep, 'srv1', 's')
    path = tmp_path / 'policy.yaml'
    path.write_text(
        '"livesnap:snapshot:delete": "role:admin"\n'
        '"livesnap:snapshot:create": "role:admin"\n')
    conf.set('policy_file', str(path), group='oslo_policy')
    rbac.reset()
    status, body = dep.api('DELETE', '/v1/snapshots/%s' % snap_id)
    assert (status, body['error']['code']) == (403, 'forbidden')
    status, body = dep.api('DELETE', '/v1/snapshots/%s' % snap_id,
                           token='p2-token')
    assert (status, body['error']['code']) == (404, 'not_found')
    status, body = dep.api('POST', '/v1/servers/srv1/snapshots',
                           {'snapshot': {'name': 'x', 'disk': 'vda'}})
    assert status == 403
    # Reading is still the owner's right.
    assert dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot'][
        'status'] == 'available'
    # Nothing was recorded by the refused requests.
    assert len(dep.ok('GET', '/v1/operations')['operations']) == 1
