"""``tools/run`` and ``tools/boot-vm``, end to end, the way a user runs them.

``tools/run --detach`` starts the all-in-one service and boots the demo VM;
the CLI then snapshots it with the demo token from the state directory;
``tools/run --stop`` must leave no QEMU and no service process behind.
Re-running on the same state directory boots the registered server again on
its current active image.  The foreground mode stops everything on SIGTERM.
"""

import io
import json
import os
import signal
import subprocess
import time

import pytest

from livesnap_tools import fixtures
from livesnap_tools import testvm
from livesnapclient import shell

pytestmark = pytest.mark.functional

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUN = os.path.join(TOP, 'tools', 'run')
BOOT_VM = os.path.join(TOP, 'tools', 'boot-vm')
#: generous: ensure-env, database migration and QEMU start on a loaded box
TIMEOUT = 600


def _run(args, timeout=TIMEOUT):
    proc = subprocess.run(args, cwd=TOP, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc


def _check(proc):
    assert proc.returncode == 0, (
        'exit %d\n--- stdout ---\n%s\n--- stderr ---\n%s'
        % (proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def _log(state):
    try:
        with open(os.path.join(state, 'livesnap.log')) as f:
            return f.read()[-6000:]
    except OSError:
        return ''


def _processes_using(state):
    """Live (non-zombie) processes whose command line mentions ``state``."""
    found = []
    needle = state.encode()
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline and testvm._pid_alive(pid):
            found.append((pid, cmdline.replace(b'\0', b' ').decode()))
    return found


def _wait_no_processes(state, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        left = _processes_using(state)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _livesnap(url, token, *argv):
    """Run the CLI in-process; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = shell.main(['--url', url, '--token', token] + list(argv),
                        stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def _demo_credentials(state, output):
    """URL and demo token, from the printed instructions and the state
    directory (both must agree).
    """
    with open(os.path.join(state, 'demo.token')) as f:
        token = f.read().strip()
    url = token_line = None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith('export LIVESNAP_URL='):
            token_line = line
            for word in line.split()[1:]:
                key, _, value = word.partition('=')
                if key == 'LIVESNAP_URL':
                    url = value
                elif key == 'LIVESNAP_TOKEN':
                    assert value == token
    assert token_line is not None, output
    assert url is not None, output
    return url, token


def _snapshot(url, token, name):
    status, out, err = _livesnap(url, token, 'snapshot', 'create', 'demo',
                                 '--disk', 'vda', '--name', name, '--wait',
                                 '--timeout', '300', '-f', 'json')
    assert status == 0, (out, err)
    snapshot = json.loads(out)
    op = snapshot.pop('operation')
    assert op['status'] == 'succeeded', op
    assert [s['name'] for s in op['steps']] == [
        'prepare', 'pause', 'pivot', 'resume'], op
    assert all(s['status'] == 'done' for s in op['steps']), op
    assert snapshot['status'] == 'available', snapshot
    return snapshot, op


def _stop(state):
    proc = _run([RUN, '--stop', '--state-dir', state])
    left = _wait_no_processes(state)
    return proc, left


@pytest.fixture
def state(tmp_path):
    # Short: the QMP socket lives under it (107-byte limit).
    path = str(tmp_path / 'state')
    yield path
    if _processes_using(path):
        _stop(path)
        for pid, _ in _processes_using(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_run_detach_snapshot_stop_and_rerun(state):
    port = fixtures.free_port()
    proc = _run([RUN, '--detach', '--state-dir', state, '--port', str(port)])
    try:
        output = _check(proc)
        url, token = _demo_credentials(state, output)
        assert url == 'http://127.0.0.1:%d' % port
        assert 'snapshot create demo --disk vda --name s1 --wait' in output
        assert 'snapshot list demo --tree' in output
        assert '--stop' in output

        status, out, err = _livesnap(url, token, 'server', 'list',
                                     '-f', 'json')
        assert status == 0, err
        assert [s['ID'] for s in json.loads(out)] == ['demo']

        # Data written through the running QEMU, then an online snapshot.
        conf = os.path.join(state, 'livesnap.conf')
        _check(_run([BOOT_VM, '--config-file', conf, '--write', 'demo',
                     '0xaa', '0', '1M']))
        s1, op1 = _snapshot(url, token, 's1')
        assert op1['mode'] == 'online'

        status, out, err = _livesnap(url, token, 'snapshot', 'list', 'demo',
                                     '--tree', '--ascii')
        assert status == 0, err
        assert 's1 [%s] available' % s1['id'][:8] in out, out

        status, out, err = _livesnap(url, token, 'operation', 'show',
                                     op1['id'])
        assert status == 0, err
        assert 'succeeded' in out and 'pivot' in out, out

        # Image paths and sockets are host details: the demo tenant does
        # not see them, the admin does.
        tenant_view = json.loads(_livesnap(url, token, 'server', 'show',
                                           'demo', '-f', 'json')[1])
        assert 'active_image' not in tenant_view['disks'][0]
        assert 'qmp_socket' not in tenant_view
        with open(os.path.join(state, 'admin.token')) as f:
            admin_token = f.read().strip()
        server = json.loads(_livesnap(url, admin_token, 'server', 'show',
                                      'demo', '-f', 'json')[1])
        active = server['disks'][0]['active_image']
        assert active.startswith(os.path.join(state, 'images') + '/')
        # s1 holds what was written before it: the demo's base image.
        base = os.path.join(state, 'images', 'demo-vda.qcow2')
        assert testvm.read_pattern_ok(base, 0xaa, 0, 1 << 20)
    except Exception:
        print('--- livesnap.log ---\n' + _log(state))
        raise
    finally:
        stop, left = _stop(state)
    _check(stop)
    assert left == [], left
    assert not os.path.exists(os.path.join(state, 'livesnap.pid'))
    assert not os.path.exists(os.path.join(state, 'run', 'demo.qmp'))

    # Again on the same state directory: the registered server boots on its
    # current active image (the layer made by s1), and snapshots go on.
    proc = _run([RUN, '--detach', '--state-dir', state, '--port', str(port)])
    try:
        output = _check(proc)
        assert 'already registered' in output, output
        url2, token2 = _demo_credentials(state, output)
        assert token2 == token
        vm = testvm.TestVM('/dev/null', server['qmp_socket'])
        assert os.path.realpath(vm.top_image()) == os.path.realpath(active)
        s2, _ = _snapshot(url2, token2, 's2')
        snaps = json.loads(_livesnap(url2, token2, 'snapshot', 'list',
                                     'demo', '-f', 'json')[1])
        by_name = {s['Name']: s for s in snaps}
        assert by_name['s2']['Parent'] == s1['id']
    except Exception:
        print('--- livesnap.log ---\n' + _log(state))
        raise
    finally:
        stop, left = _stop(state)
    _check(stop)
    assert left == [], left


def test_run_foreground_stops_everything_on_sigterm(state):
    port = fixtures.free_port()
    os.makedirs(state)
    out_path = os.path.join(state, 'run.out')
    with open(out_path, 'w') as out:
        proc = subprocess.Popen([RUN, '--state-dir', state, '--port',
                                 str(port)], cwd=TOP, stdout=out,
                                stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            with open(out_path) as f:
                output = f.read()
            if 'Press Ctrl-C' in output:
                break
            assert proc.poll() is None, output + _log(state)
            assert time.monotonic() < deadline, output + _log(state)
            time.sleep(0.5)
        url, token = _demo_credentials(state, output)
        status, out, err = _livesnap(url, token, 'server', 'show', 'demo')
        assert status == 0, err
        assert _processes_using(state), 'nothing runs?'
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open(out_path) as f:
        output = f.read()
    assert 'run: stopped' in output, output
    assert _wait_no_processes(state) == [], output


def test_run_driver_libvirt(state, libvirt_up):
    """``tools/run --driver libvirt``: the demo VM is a libvirt domain,
    registered by domain; ``--stop`` destroys and undefines it.
    """
    import libvirt
    from livesnap_tools import libvirtd
    port = fixtures.free_port()
    proc = _run([RUN, '--detach', '--driver', 'libvirt', '--state-dir',
                 state, '--port', str(port)])
    try:
        output = _check(proc)
        assert 'registered server demo by domain livesnap-demo' in output
        url, token = _demo_credentials(state, output)
        with open(os.path.join(state, 'livesnap.conf')) as f:
            assert 'driver = libvirt' in f.read().split('[agent]')[1]
        status, out, err = _livesnap(url, token, 'snapshot', 'create',
                                     'demo', '--disk', 'vda', '--name', 's1',
                                     '--wait', '--timeout', '300', '-f',
                                     'json')
        assert status == 0, (out, err)
        op1 = json.loads(out)['operation']
        assert op1['status'] == 'succeeded', op1
        assert [x['name'] for x in op1['steps']] == [
            'prepare', 'pause', 'snapshot', 'resume'], op1
        conn = libvirt.open(libvirtd.URI)
        try:
            dom = conn.lookupByName('livesnap-demo')
            assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        finally:
            conn.close()
    except Exception:
        print('--- livesnap.log ---\n' + _log(state))
        raise
    finally:
        stop, left = _stop(state)
    _check(stop)
    assert left == [], left
    conn = libvirt.open(libvirtd.URI)
    try:
        assert 'livesnap-demo' not in conn.listDefinedDomains()
        assert 'livesnap-demo' not in [d.name() for d in
                                       conn.listAllDomains(0)]
    finally:
        conn.close()


def test_run_hosts_refuses_driver_libvirt(tmp_path):
    """``--hosts N`` runs QEMU demo VMs; with ``--driver libvirt`` it says
    so and starts nothing instead of ignoring the driver.
    """
    state = str(tmp_path / 'state')
    for args in (['--hosts', '2', '--driver', 'libvirt'],
                 ['--driver=libvirt', '--hosts=3', '--detach']):
        proc = _run([RUN, '--state-dir', state] + args)
        assert proc.returncode != 0
        assert '--driver libvirt is not supported with --hosts' in \
            proc.stderr, proc.stderr
    assert not os.path.exists(state)
