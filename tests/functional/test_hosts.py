"""Several hypervisor hosts: snapshots on all at once, and a host cut off.

On the host bed (``livesnap_tools/hostbed.py``): three hosts, each a network
namespace with its own agent, VM and image directory; the conductor, a
private RabbitMQ and a private PostgreSQL outside, reached over the bridge.
Short heartbeat and host-down options (``hostbed.CONDUCTOR_FAST``,
``hostbed.AGENT_FAST``) keep the faults quick.

* Snapshots are created, merged and deleted on the three hosts at once;
  every operation succeeds, every layer stays in its host's image
  directory and every disk keeps the data its VM wrote.
* One host is cut off (its link down) in the middle of a rate-limited
  merge: its operation ends ``failed`` with a reason while its disk stays
  locked (in doubt); its VM is running, not paused; the host reads
  ``down``, new work for its server answers 503 while the other hosts'
  servers answer 202 and their operations succeed; once the link is up
  again the agent's journal settles the merge (the operation ends, the
  disk is free) and the host serves again.
* One host's agent is held inside a create's paused section (a fault
  point that holds it) and its link goes down there: the VM runs all
  along (QEMU ran the section's queued ``cont``), the create ends
  ``failed`` in doubt, the host's server answers 503 while another host's
  server serves; once the link is up the journal's report settles the
  create (``succeeded``, the disk free).
* ``./tools/run --hosts 2 --detach`` serves a demo VM on each host, and
  ``--stop`` leaves no namespace, link or process behind.

Skipped when not root or without ``ip netns``, RabbitMQ, PostgreSQL or
QEMU.
"""

import concurrent.futures
import json
import os
import subprocess
import time
import urllib.request

import pytest

from livesnap_tools import fixtures
from livesnap_tools import hostbed
from livesnap_tools import testvm

pytestmark = pytest.mark.functional

MiB = 1024 * 1024
#: generous bounds for things that take seconds here (not timed checks:
#: they only keep a broken run from hanging)
WAIT_S = 120


@pytest.fixture(scope='module')
def bed(tmp_path_factory, request):
    why = hostbed.unavailable()
    if why:
        pytest.skip('host bed unavailable: %s' % why)
    tag = os.urandom(3).hex()
    victim = '%s-hv3' % tag
    b = hostbed.HostBed(
        tmp_path_factory.mktemp('hostbed'), hosts=3, tag=tag,
        extra=(hostbed.CONDUCTOR_FAST + hostbed.AGENT_FAST +
               '[api]\noperations_per_minute = 0\n'),
        # the cut-off host merges slowly, so the cut falls inside a merge
        agent_extra={victim: '[agent]\nmerge_rate_limit_mb = 1\n'})
    failed = request.session.testsfailed
    b.start()
    try:
        b.victim = victim
        b.servers = {}
        for host in b.hosts:
            vm = b.add_vm(host, 'vm-' + host)
            b.register(vm)
            b.servers[host] = vm
        yield b
    finally:
        if request.session.testsfailed != failed:
            for name in sorted(b.procs):
                print('--- %s log ---\n%s' % (name, b.log(name)))
        b.stop()


def _create(bed, server, name):
    status, body = bed.api('POST', '/v1/servers/%s/snapshots' % server,
                           {'snapshot': {'name': name, 'disk': 'vda'}})
    assert status == 202, body
    return body['snapshot']['id'], body['operation']['id']


def _delete(bed, snapshot_id):
    status, body = bed.api('DELETE', '/v1/snapshots/%s' % snapshot_id)
    assert status == 202, body
    return body['operation']


def _succeeds(bed, op_id):
    op = bed.wait_operation(op_id, timeout=WAIT_S)
    assert op['status'] == 'succeeded', op
    return op


def _disk(bed, server):
    return bed.ok('GET', '/v1/servers/%s' % server,
                  token='admin-token')['server']['disks'][0]


def _work_on(bed, host, rounds=3, base=0x10):
    """Create ``rounds`` snapshots (writing a pattern before each), then
    delete them (merges); returns the patterns and where they were.
    """
    vm = bed.servers[host]
    written = []
    snaps = []
    for i in range(rounds):
        pattern = base + i
        vm.write(pattern, i * MiB, MiB)
        written.append((pattern, i * MiB))
        snap_id, op_id = _create(bed, vm.name, 's%d' % i)
        _succeeds(bed, op_id)
        snaps.append(snap_id)
    modes = []
    for snap_id in snaps[1:] + snaps[:1]:
        op = _delete(bed, snap_id)
        modes.append(_succeeds(bed, op['id'])['mode'])
    return written, modes


def _check_disk(bed, host, written):
    vm = bed.servers[host]
    assert vm.status() == 'running'
    vm.flush()
    image = _disk(bed, vm.name)['active_image']
    assert os.path.dirname(image) == bed.host_dir(host, 'images')
    for pattern, offset in written:
        assert testvm.read_pattern_ok(image, pattern, offset, MiB), \
            (host, pattern, offset)


def test_snapshots_on_every_host_at_once(bed):
    with concurrent.futures.ThreadPoolExecutor(len(bed.hosts)) as pool:
        futures = {host: pool.submit(_work_on, bed, host, base=0x10 + 8 * i)
                   for i, host in enumerate(bed.hosts)}
        results = {host: f.result() for host, f in futures.items()}
    for host, (written, modes) in results.items():
        assert modes == ['merge', 'merge', 'merge'], (host, modes)
        _check_disk(bed, host, written)
        assert not _disk(bed, bed.servers[host].name)['busy']
    assert set(bed.host_states().values()) == {'up'}


def _wait(predicate, what, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('%s: not after %ss' % (what, timeout))
        time.sleep(0.1)


def _op(bed, op_id):
    return bed.ok('GET', '/v1/operations/%s' % op_id)['operation']


def test_host_cut_off_mid_merge(bed):
    victim = bed.victim
    vm = bed.servers[victim]
    others = [h for h in bed.hosts if h != victim]
    # The live layer holds more than the snapshot, so the snapshot's
    # data is streamed into it: some MiB at 1 MiB/s, with progress
    # reported as the job goes.
    vm.write(0xc1, 0, 2 * MiB)
    snap_id, op_id = _create(bed, vm.name, 'big')
    _succeeds(bed, op_id)
    vm.write(0xc2, 32 * MiB, 16 * MiB)
    merge = _delete(bed, snap_id)
    assert merge['mode'] == 'merge', merge
    # The agent reports progress once its block job copies.
    progress = _wait(lambda: _op(bed, merge['id'])['progress'],
                     'merge progress')
    bed.cut(victim)
    assert progress < 100   # the cut falls inside the merge
    try:
        # In doubt: failed with a reason, the disk still locked.
        op = _wait(lambda: (lambda o: o if o['status'] != 'running'
                            else None)(_op(bed, merge['id'])),
                   'merge ends while the host is cut off')
        assert op['status'] == 'failed' and op['error'], op
        print('cut off: merge %s failed in doubt: %s' % (op['id'],
                                                        op['error']))
        assert _disk(bed, vm.name)['busy']
        _wait(lambda: bed.host_states()[victim] == 'down', 'host down')
        # The VM runs: its agent resumed it whatever the network does.
        assert vm.status() == 'running'
        # 503 for the cut-off host's server only; reads still answer.
        status, body = bed.api('POST', '/v1/servers/%s/snapshots' % vm.name,
                               {'snapshot': {'name': 'x', 'disk': 'vda'}})
        assert status == 503, body
        assert bed.api('GET', '/v1/servers/%s' % vm.name)[0] == 200
        # The other hosts keep serving meanwhile.
        with concurrent.futures.ThreadPoolExecutor(len(others)) as pool:
            results = list(pool.map(
                lambda h: _work_on(bed, h, rounds=2, base=0x40), others))
        for host, (written, modes) in zip(others, results):
            _check_disk(bed, host, written)
        assert all(bed.host_states()[h] == 'up' for h in others)
        assert bed.host_states()[victim] == 'down'
        assert vm.status() == 'running'
    finally:
        bed.restore(victim)
    bed.wait_host(victim, 'up', timeout=WAIT_S)
    # The journal settles the merge: its report arrives and is applied.
    _wait(lambda: not _disk(bed, vm.name)['busy'], 'disk released')
    op = _op(bed, merge['id'])
    assert op['status'] == 'succeeded', op
    print('link up: merge %s %s, steps %s' % (
        op['id'], op['status'], [s['name'] for s in op['steps']]))
    assert bed.api('GET', '/v1/snapshots/%s' % snap_id)[0] == 404
    _check_disk(bed, victim, [(0xc1, 0), (0xc2, 32 * MiB)])
    # And it serves again.
    snap_id, op_id = _create(bed, vm.name, 'after')
    _succeeds(bed, op_id)
    assert vm.status() == 'running'


#: seconds the agent is held inside a create's paused section: longer than
#: the cut takes to show (host down, the operation failed in doubt)
HOLD_S = 8


def test_host_cut_while_a_create_is_paused(bed):
    """The agent is held inside a create's paused section (a fault point
    that holds it before ``pivot``, after ``stop`` went out with the rest
    of the section), and its link goes down there.
    """
    host = bed.hosts[0]
    vm = bed.servers[host]
    other = bed.servers[bed.hosts[1]]
    name = 'agent-' + host
    bed.restart_agent(host, '[agent]\nfault_points = '
                            'create_snapshot:pivot:before:%d\n' % HOLD_S)
    try:
        vm.write(0xd1, 0, MiB)
        snap_id, op_id = _create(bed, vm.name, 'held')
        _wait(lambda: 'Fault injection: holding create_snapshot:pivot:before'
              in bed.log(name, tail=20000), 'agent held in the pause')
        bed.cut(host)
        try:
            # QEMU ran the section's queued cont: the VM runs while its
            # agent is still inside the paused section, and stays running.
            assert vm.status() == 'running'
            _wait(lambda: bed.host_states()[host] == 'down', 'host down')
            assert vm.status() == 'running'
            # In doubt: failed with a reason, the disk still locked.
            op = _wait(lambda: (lambda o: o if o['status'] != 'running'
                                else None)(_op(bed, op_id)),
                       'create ends while the host is cut off')
            assert op['status'] == 'failed' and op['error'], op
            assert _disk(bed, vm.name)['busy']
            print('cut off in the pause: create %s failed in doubt: %s'
                  % (op_id, op['error']))
            # 503 for this host's server only.
            status, body = bed.api(
                'POST', '/v1/servers/%s/snapshots' % vm.name,
                {'snapshot': {'name': 'x', 'disk': 'vda'}})
            assert status == 503, body
            _succeeds(bed, _create(bed, other.name, 'meanwhile')[1])
            assert vm.status() == 'running'
        finally:
            bed.restore(host)
        bed.wait_host(host, 'up', timeout=WAIT_S)
        # The agent finished the create; its journal's report settles it.
        _wait(lambda: not _disk(bed, vm.name)['busy'], 'disk released')
        op = _op(bed, op_id)
        assert op['status'] == 'succeeded', op
        steps = [s['name'] for s in op['steps']]
        assert 'pivot' in steps and 'resume' in steps, steps
        print('link up: create %s %s, steps %s' % (op_id, op['status'],
                                                   steps))
        assert bed.api('GET', '/v1/snapshots/%s' % snap_id)[0] == 200
        _check_disk(bed, host, [(0xd1, 0)])
    finally:
        bed.restart_agent(host, '')
    _succeeds(bed, _create(bed, vm.name, 'after-hold')[1])
    assert vm.status() == 'running'


def test_tools_run_hosts_and_stop(tmp_path):
    """``./tools/run --hosts 2 --detach`` serves a demo VM on each host;
    ``--stop`` removes every namespace, link and process it made.
    """
    why = hostbed.unavailable()
    if why:
        pytest.skip('host bed unavailable: %s' % why)
    if os.path.exists('/run/netns/hv1'):
        pytest.skip('a host bed demo already runs here (namespace hv1)')
    top = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    run = os.path.join(top, 'tools', 'run')
    state = tmp_path / 'state'
    port = fixtures.free_port()
    record_file = state / 'hosts' / 'bed.json'
    try:
        proc = subprocess.run([run, '--hosts', '2', '--detach', '--state-dir',
                               str(state), '--port', str(port)], cwd=top,
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert 'demo-hv2' in proc.stdout
        record = json.loads(record_file.read_text())
        assert sorted(record['namespaces']) == ['hv1', 'hv2']
        env = (state / 'hosts' / 'demo.env').read_text().split()
        token = [w.split('=', 1)[1] for w in env
                 if w.startswith('LIVESNAP_TOKEN=')][0]
        req = urllib.request.Request('http://127.0.0.1:%d/v1/servers' % port,
                                     headers={'X-Auth-Token': token})
        with urllib.request.urlopen(req, timeout=30) as resp:
            servers = json.loads(resp.read())['servers']
        assert sorted(s['id'] for s in servers) == ['demo-hv1', 'demo-hv2']
    finally:
        stop = subprocess.run([run, '--stop', '--state-dir', str(state)],
                              cwd=top, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not record_file.exists()
    netns = subprocess.run(['ip', 'netns', 'list'], capture_output=True,
                           text=True).stdout.split()
    assert 'hv1' not in netns and 'hv2' not in netns
    assert subprocess.run(['ip', 'link', 'show', record['bridge']],
                          capture_output=True).returncode != 0
    for p in record['procs'].values():
        assert not hostbed._pid_is(p['pid'], p['mark'])
