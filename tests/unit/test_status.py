"""``livesnap-status upgrade check`` (oslo.upgradecheck)."""

import json
import subprocess
import sys

from oslo_upgradecheck import upgradecheck
import pytest
import sqlalchemy as sa

from agent import rpcapi as agent_rpcapi
from conductor.db import api as db
from conductor.db import models
from conductor import status


def _results():
    checks = status.Checks()
    out = {}
    for name, func in checks._upgrade_checks:
        # The policy file check (oslo.upgradecheck's own) needs a parsed
        # configuration: it runs in test_the_command_line.
        if not isinstance(func, tuple):
            out[name] = func(checks)
    return out


def _host(name, version, alive=True):
    with db.transaction() as s:
        beat = models.utcnow()
        if not alive:
            beat = beat.replace(year=beat.year - 1)
        info = {'image_dirs': ['/tmp']}
        if version is not None:
            info['rpc_version'] = version
        s.add(models.Host(name=name, last_heartbeat=beat, info=info))


@pytest.mark.parametrize('database', ['sqlite', 'postgresql'],
                         indirect=True)
def test_a_fresh_deployment_passes(database):
    results = _results()
    assert {r.code for r in results.values()} == {upgradecheck.Code.SUCCESS}
    assert 'revision' in results['Database schema'].details


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_a_schema_behind_fails_with_the_command_to_run(database):
    with db.get_engine().begin() as conn:
        conn.execute(sa.text('UPDATE alembic_version SET version_num = '
                             "'0000'"))
    result = _results()['Database schema']
    assert result.code == upgradecheck.Code.FAILURE
    assert 'livesnap-manage db sync' in result.details


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_older_agents_warn_newer_ones_fail_down_ones_are_ignored(database):
    _host('h-current', agent_rpcapi.RPC_API_VERSION)
    _host('h-down-new', '9.9', alive=False)
    assert _results()['Agent API versions'].code == upgradecheck.Code.SUCCESS
    _host('h-old', '1.4')  # the oldest agent the conductor serves
    result = _results()['Agent API versions']
    assert result.code == upgradecheck.Code.WARNING
    assert 'h-old (1.4)' in result.details
    _host('h-new', '9.9')
    result = _results()['Agent API versions']
    assert result.code == upgradecheck.Code.FAILURE
    assert 'h-new (9.9)' in result.details


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_agents_older_than_the_minimum_fail_up_or_down(database):
    """An agent older than agent RPC 1.4 (or one that reports no version)
    gets nothing from this conductor: each is named, up or down.
    """
    _host('h-current', agent_rpcapi.RPC_API_VERSION)
    _host('h-ancient', None)
    _host('h-13', '1.3', alive=False)
    result = _results()['Agent API versions']
    assert result.code == upgradecheck.Code.FAILURE
    assert 'h-ancient (no version)' in result.details
    assert 'h-13 (1.3, down)' in result.details
    assert 'h-current' not in result.details
    assert '1.4' in result.details


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_an_operation_running_for_hours_is_named(database):
    old = models.utcnow().replace(year=2000)
    with db.transaction() as s:
        s.add(models.Operation(
            id='op-old', project_id='p1', server_id='s1', disk_id='d1',
            host='h1', action='create', status='running', created_at=old))
    result = _results()['Operations in progress']
    assert result.code == upgradecheck.Code.WARNING
    assert 'op-old' in result.details


def test_keystone_without_its_public_endpoint_fails(conf):
    conf.set('auth_strategy', 'keystone', group='api')
    result = status.Checks()._check_auth()
    assert result.code == upgradecheck.Code.FAILURE
    assert 'www_authenticate_uri' in result.details


def test_a_missing_api_paste_file_fails(conf, tmp_path):
    conf.set('api_paste_config', str(tmp_path / 'gone.ini'), group='wsgi')
    result = status.Checks()._check_api_pipeline()
    assert result.code == upgradecheck.Code.FAILURE
    assert 'gone.ini' in result.details


def test_the_command_line(tmp_path):
    config = tmp_path / 'livesnap.conf'
    config.write_text('[database]\nconnection = sqlite:///%s\n'
                      % (tmp_path / 'db.sqlite'))
    run = subprocess.run(
        [sys.executable, '-c', 'import sys; from conductor import status; '
         'sys.exit(status.main())', '--config-file', str(config),
         'upgrade', 'check', '--json'],
        capture_output=True, text=True, timeout=120)
    # An empty database: the schema check fails, with the way out.
    assert run.returncode == upgradecheck.Code.FAILURE, run.stderr
    report = json.loads(run.stdout)
    by_name = {c['check']: c for c in report['checks']}
    assert by_name['Database schema']['result'] == upgradecheck.Code.FAILURE
    assert 'db sync' in by_name['Database schema']['details']
    assert by_name['Policy file']['result'] == upgradecheck.Code.SUCCESS
