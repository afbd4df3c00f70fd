"""The enforcer looks at the policy file on a timer, not on every check,
and remembers its decisions only until it looks again."""

import pytest

from conductor.api import auth
from conductor import rbac

MEMBER_P1 = auth.Credentials('p1', ['member'])


@pytest.fixture(autouse=True)
def _fresh_enforcer():
    rbac.reset()
    yield
    rbac.reset()


def _write(path, rule):
    path.write_text('"livesnap:snapshot:delete": "%s"\n' % rule)


def test_a_changed_file_counts_only_after_the_interval(conf, tmp_path,
                                                       monkeypatch):
    path = tmp_path / 'policy.yaml'
    _write(path, 'role:admin')
    conf.set('policy_file', str(path), group='oslo_policy')
    monkeypatch.setattr(rbac, 'RELOAD_INTERVAL', 3600.0)
    assert not rbac.check(MEMBER_P1, 'livesnap:snapshot:delete', 'p1')
    _write(path, '@')
    # Within the interval: the file is not looked at, the decision kept.
    assert not rbac.check(MEMBER_P1, 'livesnap:snapshot:delete', 'p1')
    rbac._get_enforcer()._next_load = 0.0  # the interval has passed
    assert rbac.check(MEMBER_P1, 'livesnap:snapshot:delete', 'p1')


def test_decisions_depend_on_target_and_credentials():
    rule = 'livesnap:snapshot:delete'
    assert rbac.check(MEMBER_P1, rule, 'p1')
    assert not rbac.check(MEMBER_P1, rule, 'p2')
    assert rbac.check(auth.Credentials('p2', ['member']), rule, 'p2')
    assert rbac.check(auth.Credentials('p1', ['admin']), rule, 'p2')
    assert rbac.check(MEMBER_P1, rule, 'p1')  # remembered, unchanged


def test_file_lookups_do_not_happen_on_every_check(conf, tmp_path,
                                                   monkeypatch):
    conf.set('policy_file', str(tmp_path / 'absent.yaml'),
             group='oslo_policy')
    enforcer = rbac._get_enforcer()
    calls = []
    real = type(enforcer).__mro__[1].load_rules
    monkeypatch.setattr(type(enforcer).__mro__[1], 'load_rules',
                        lambda self, force_reload=False: (
                            calls.append(1), real(self, force_reload))[1])
    for project in ('p1', 'p2', 'p3') * 10:
        rbac.check(MEMBER_P1, 'livesnap:snapshot:get', project)
    assert len(calls) == 1
