"""``livesnap`` and ``openstack livesnap`` as a user runs them: separate
processes against a running conductor and agent with a real QEMU VM.

The conductor authenticates with its token file here, so ``livesnap`` uses
``--url``/``--token`` (and ``LIVESNAP_URL``/``LIVESNAP_TOKEN``) and
``openstack`` the ``admin_token`` auth type with ``OS_ENDPOINT`` and
``OS_TOKEN``; the keystone paths (``OS_AUTH_URL``, clouds.yaml, the service
catalog) are covered against a stub keystone in tests/unit/test_cli.py.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.functional import scenarios

pytestmark = pytest.mark.functional

BIN = os.path.dirname(sys.executable)
TOKEN = 'p1-token'


def _run(argv, env=None):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(('OS_', 'LIVESNAP_'))}
    clean.update(env or {})
    proc = subprocess.run(argv, env=clean, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def livesnap(dep, *argv):
    """``livesnap --url URL --token TOKEN ARGV``."""
    return _run([os.path.join(BIN, 'livesnap'), '--url', dep.base_url,
                 '--token', TOKEN] + list(argv))


def openstack(dep, *argv):
    """``openstack livesnap ARGV`` with the OS_* variables."""
    pytest.importorskip('openstackclient')
    return _run([os.path.join(BIN, 'openstack'), 'livesnap'] + list(argv),
                env={'OS_AUTH_TYPE': 'admin_token',
                     'OS_ENDPOINT': dep.base_url, 'OS_TOKEN': TOKEN})


def test_livesnap_and_openstack_on_a_running_vm(inprocess, tmp_path):
    dep = inprocess
    vm, _ = scenarios.start_vm(dep, tmp_path)
    try:
        vm.write(0xaa, 0, scenarios.MiB)
        # livesnap: create with --wait, progress on stderr, JSON on stdout.
        rc, out, err = livesnap(dep, 'snapshot', 'create', 'srv1', '--disk',
                                'vda', '--name', 's1', '--wait',
                                '--timeout', '300', '-f', 'json')
        assert rc == 0, err
        s1 = json.loads(out)
        op1 = s1.pop('operation')
        assert s1['status'] == 'available' and s1['current'] is True, s1
        assert op1['status'] == 'succeeded' and op1['mode'] == 'online'
        assert [s['name'] for s in op1['steps']] == [
            'prepare', 'pause', 'pivot', 'resume']
        assert 'Operation %s: succeeded' % op1['id'] in err
        assert vm.status() == 'running'

        # openstack livesnap: the same command, a child of s1; table format.
        vm.write(0xbb, 0, scenarios.MiB)
        rc, out, err = openstack(dep, 'snapshot', 'create', 'srv1',
                                 '--disk', 'vda', '--name', 's2', '--wait',
                                 '--timeout', '300')
        assert rc == 0, err
        assert re.search(r'\| status +\| available', out), out
        assert re.search(r'\| parent_id +\| %s' % s1['id'], out), out
        assert re.search(r'\| consistency +\| crash', out), out
        assert 'Operation ' in err and ': succeeded' in err, err

        # The tree, from both commands.
        rc, out, err = livesnap(dep, 'snapshot', 'list', 'srv1', '--tree',
                                '--ascii')
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[0] == 'Disk vda:'
        assert lines[1].startswith('s1 [%s] available ' % s1['id'][:8])
        assert lines[2].startswith('`- s2 [')
        assert lines[2].endswith('<- current')
        rc, out2, err = openstack(dep, 'snapshot', 'list', 'srv1', '--tree',
                                  '--ascii')
        assert (rc, out2) == (0, out), err

        # -f json with -c, and -f value, as scripts use them.
        rc, out, err = openstack(dep, 'snapshot', 'list', 'srv1', '-f',
                                 'json', '-c', 'Name', '-c', 'Parent')
        assert rc == 0, err
        rows = json.loads(out)
        assert {r['Name']: r['Parent'] for r in rows} == {
            's1': None, 's2': s1['id']}
        assert all(set(r) == {'Name', 'Parent'} for r in rows)
        rc, out, err = livesnap(dep, 'server', 'list', '-f', 'value', '-c',
                                'ID')
        assert (rc, out) == (0, 'srv1\n'), err
        env = {'LIVESNAP_URL': dep.base_url, 'LIVESNAP_TOKEN': TOKEN}
        rc, out, err = _run([os.path.join(BIN, 'livesnap'), 'operation',
                             'show', op1['id'], '-f', 'value', '-c',
                             'status'], env=env)
        assert (rc, out) == (0, 'succeeded\n'), err

        # Errors: the API's code on stderr, exit 1, nothing on stdout.
        rc, out, err = openstack(dep, 'snapshot', 'show', 'nope')
        assert rc == 1 and out == ''
        assert 'Error (HTTP 404 ' in err, err
        rc, out, err = livesnap(dep, 'snapshot', 'revert', s1['id'])
        assert rc == 1 and out == ''
        assert 'Error (HTTP 409 ' in err, err
    finally:
        vm.kill()
