"""``livesnap-manage``: what it refuses before doing anything."""

import os
import subprocess
import sys
import time

import pytest

from conductor.db import api as db
from conductor import manage
from livesnap import rpc


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_audit_on_the_in_memory_bus_is_refused_at_once(database, conf,
                                                       monkeypatch, capsys):
    monkeypatch.setattr(rpc, '_SERVED', {})
    started = time.monotonic()
    assert manage.main(['audit']) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert 'in-memory bus' in err and 'transport_url' in err


def test_audit_on_a_database_with_no_schema_says_db_sync(conf, tmp_path,
                                                         capsys):
    conf.set('connection', 'sqlite:///%s' % (tmp_path / 'empty.sqlite'),
             group='database')
    conf.set('transport_url', 'rabbit://guest:guest@127.0.0.1:5672/')
    db.reset()
    try:
        assert manage.main(['audit']) == 2
    finally:
        db.reset()
    err = capsys.readouterr().err
    assert 'livesnap-manage db sync' in err
    assert 'Traceback' not in err


@pytest.mark.parametrize('module, status', [('manage', 2), ('status', 255)])
def test_no_configuration_is_refused_naming_the_files(tmp_path, module,
                                                      status):
    """With no --config-file and none in oslo.config's places, the tools
    would make a database of their own under state_path: refused.
    """
    args = ['db', 'sync'] if module == 'manage' else ['upgrade', 'check']
    env = dict(os.environ, HOME=str(tmp_path),
               OS_DEFAULT__STATE_PATH=str(tmp_path / 'state'))
    run = subprocess.run(
        [sys.executable, '-c', 'import sys; from conductor import %s; '
         'sys.exit(%s.main())' % (module, module)] + args,
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert run.returncode == status, run.stderr
    assert 'no configuration file found' in run.stderr
    assert os.path.join(str(tmp_path), '.livesnap', 'livesnap.conf') \
        in run.stderr
    assert '/etc/livesnap/livesnap.conf' in run.stderr
    assert not (tmp_path / 'state').exists()
