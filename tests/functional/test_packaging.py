"""What ``pip install`` puts into a fresh virtualenv.

The service distribution (this directory's ``setup.cfg``) installs
``agent``, ``conductor`` and ``livesnap`` and never the tools
(``livesnap_tools``) or the tests.  A client distribution in ``client/``,
when the tree has one, installs the ``livesnap`` command without any of
the server's libraries.  Each is built from a copy of the checkout by pip's
ordinary build (setuptools from the configured index).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.functional

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CLIENT = os.path.join(TOP, 'client')
#: what only the conductor and the agent need, and what is never installed
NOT_IN_THE_CLIENT = ('oslo_messaging', 'sqlalchemy', 'kombu', 'webob',
                     'alembic', 'keystonemiddleware', 'agent', 'conductor',
                     'livesnap_tools', 'tests')


def _run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)


def _fresh_venv(tmp_path):
    """A new virtualenv under ``tmp_path``; returns its python."""
    venv = tmp_path / 'venv'
    proc = _run([sys.executable, '-m', 'venv', str(venv)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    return str(venv / 'bin' / 'python')


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(
        '.git', '.venv', 'state', 'build', 'dist', '__pycache__',
        '*.egg-info', '.pytest_cache', '.hypothesis'))
    return str(dst)


def _pip(python, *args, cwd):
    proc = _run([python, '-m', 'pip', '--disable-pip-version-check']
                + list(args), cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _found(python, modules, cwd):
    """``{module: whether the virtualenv can import it}``, by its spec."""
    proc = _run([python, '-c',
                 'import importlib.util, json, sys; print(json.dumps('
                 '{m: importlib.util.find_spec(m) is not None '
                 'for m in sys.argv[1:]}))'] + list(modules), cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_service_install_leaves_out_the_tools_and_tests(tmp_path):
    src = _copy(TOP, tmp_path / 'src')
    python = _fresh_venv(tmp_path)
    # --no-deps: what is installed from this tree is the question here
    _pip(python, 'install', '-q', '--no-deps', src, cwd=tmp_path)
    found = _found(python, ('agent', 'conductor', 'livesnap',
                            'livesnap.conf', 'livesnap_tools', 'tests'),
                   cwd=tmp_path)
    assert found == {'agent': True, 'conductor': True, 'livesnap': True,
                     'livesnap.conf': True, 'livesnap_tools': False,
                     'tests': False}
    files = _pip(python, 'show', '-f', 'livesnap', cwd=tmp_path)
    assert 'livesnap_tools' not in files and 'tests/' not in files
    assert 'conductor/db/migrations/versions/' in files


@pytest.mark.skipif(not os.path.exists(os.path.join(CLIENT, 'setup.cfg')),
                    reason='no client distribution (client/) in this tree')
def test_client_installs_alone(tmp_path):
    src = _copy(CLIENT, tmp_path / 'client')
    python = _fresh_venv(tmp_path)
    _pip(python, 'install', '-q', src, cwd=tmp_path)
    installed = {p['name'].lower() for p in json.loads(
        _pip(python, 'list', '--format', 'json', cwd=tmp_path))}
    assert 'livesnap' not in installed
    assert not any(_found(python, NOT_IN_THE_CLIENT, cwd=tmp_path).values())
    livesnap = os.path.join(os.path.dirname(python), 'livesnap')
    proc = _run([livesnap, '--help'], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'snapshot' in proc.stdout
