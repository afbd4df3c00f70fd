"""The load benchmark's pure parts: QEMU-clock pause windows, the chain's
top node, the QEMU pause figure of an operation record, CPU deltas and
option checks (the whole benchmark runs in
tests/functional/test_bench_load.py)."""

import pytest

from livesnap_tools import bench
from livesnap_tools import bench_load
from livesnap_tools.bench_load import monitor
from livesnap_tools.bench_load import procstat
from livesnap_tools.bench_load import tenants

MiB = 1024 * 1024


def test_pause_windows_pair_stop_with_next_resume():
    events = [('RESUME', 0.5), ('STOP', 1.0), ('STOP', 1.1),
              ('RESUME', 1.002), ('STOP', 2.0), ('RESUME', 2.004),
              ('STOP', 3.0)]
    assert monitor.pause_windows(events) == [(1.0, 1.002), (2.0, 2.004)]
    assert monitor.pause_windows(events, since=1.5) == [(2.0, 2.004)]
    assert monitor.pause_windows(events, until=1.5) == [(1.0, 1.002)]


def test_top_node_is_the_head_of_the_longest_chain():
    nodes = [
        {'node-name': 'disk0', 'drv': 'qcow2', 'file': '/i/base'},
        {'node-name': 'f0', 'drv': 'file', 'file': '/i/base'},
        {'node-name': 'a', 'drv': 'qcow2', 'file': '/i/a',
         'backing_file': '/i/base'},
        {'node-name': 'b', 'drv': 'qcow2', 'file': '/i/b',
         'backing_file': '/i/a'},
        {'node-name': 'stray', 'drv': 'qcow2', 'file': '/i/stray'},
    ]
    assert monitor.top_node(nodes) == 'b'
    with pytest.raises(monitor.MonitorError):
        monitor.top_node([])


@pytest.mark.parametrize('op, expected', [
    ({'pause_ms': 7.0, 'steps': []}, None),
    ({'pause_ms': 7.0}, None),
    ({'pause_ms': 7.0, 'qemu_pause_ms': 1.25}, 1.25),
    ({'pause_ms': 7.0, 'pause_qemu_ms': 2}, 2.0),
    ({'steps': [{'name': 'pause', 'detail': {'qemu_pause_ms': 0.5}},
                {'name': 'resume', 'detail': {'attempts': 1}}]}, 0.5),
    ({'steps': [{'name': 'pivot', 'detail': None},
                {'name': 'x', 'detail': {'qemu_flag_ms': True}}]}, None),
])
def test_qemu_pause_of_tolerates_records_without_it(op, expected):
    assert tenants.qemu_pause_of(op) == expected


def test_agent_and_qemu_figures_of_a_record_with_both():
    op = {'pause_ms': 1.1, 'agent_pause_ms': 9.5, 'steps': [
        {'name': 'prepare', 'detail': {}},
        {'name': 'resume', 'detail': {'agent_pause_ms': 9.5,
                                      'qemu_pause_ms': 1.1}}]}
    assert tenants.agent_pause_of(op) == 9.5
    assert tenants.qemu_pause_of(op) == 1.1
    assert tenants.agent_pause_of({'pause_ms': 7.0}) == 7.0


def test_cpu_delta_counts_new_and_vanished_processes():
    before = {'agent': {1: (1.0, 0.5), 2: (2.0, 0.0)}}
    after = {'agent': {1: (1.5, 0.75), 3: (0.25, 0.0)},
             'qemu': {9: (3.0, 0.0)}}
    assert procstat.delta(before, after) == {
        'agent': 0.75, 'agent+children': 0.25, 'qemu': 3.0}


def test_cpu_times_of_this_process():
    own, children = procstat.cpu_times(__import__('os').getpid())
    assert own > 0 and children >= 0
    assert procstat.cpu_times(2 ** 31) is None


def _opts(argv):
    return bench.parse_args(['--only', 'load'] + argv)


def test_load_options_defaults_and_quick():
    opts = _opts([])
    assert opts.sections == ['load']
    assert (opts.agents, opts.vms, opts.tenants) == (20, 40, 20)
    assert opts.conductor_counts == [1, 2]
    quick = _opts(['--quick', '--agents', '3'])
    assert quick.agents == 3 and quick.duration == 10.0
    assert 'load' not in bench.parse_args([]).sections


@pytest.mark.parametrize('argv', [
    ['--conductors', '2,1'], ['--conductors', 'x'], ['--vms', '0'],
    ['--tenants', '5', '--vms', '2'], ['--duration', '0'],
    ['--rate', '-1'], ['--hosts', '-1'], ['--hosts', '3', '--agents', '2']])
def test_load_options_refused(argv):
    with pytest.raises(SystemExit):
        _opts(argv)


def test_load_hosts_option_sets_one_agent_per_host():
    opts = _opts(['--hosts', '3', '--vms', '6', '--tenants', '3'])
    assert (opts.hosts, opts.agents, opts.vms) == (3, 3, 6)
    assert _opts(['--hosts', '3', '--agents', '3']).agents == 3
    assert _opts([]).hosts == 0


def test_cluster_on_a_host_bed_runs_agents_and_vms_in_namespaces(tmp_path):
    from livesnap_tools.bench_load import cluster
    names = bench_load.bed_host_names('labcde', 2)
    assert names == ['labcde-hv01', 'labcde-hv02']
    cl = cluster.Cluster(tmp_path, 'rabbit://x', 'sqlite://', 2, 3, 1,
                         MiB, host_names=names, netns=True)
    assert cl.hosts == names
    assert [s['host'] for s in cl.vms] == names + names[:1]
    spawned = []
    cl._spawn = lambda name, module, override, netns=None: spawned.append(
        (name, netns))
    cl.start_agents(heartbeat_interval=2.0)
    assert spawned == [('agent-' + n, n) for n in names]
    vm = cluster.LoadVM('/i/a', '/r/a.qmp', '/r/a.mon', 'a', netns=names[1])
    assert vm.command()[:4] == ['ip', 'netns', 'exec', names[1]]
    assert '-qmp' in vm.command()
    assert cluster.LoadVM('/i/a', '/r/a.qmp', '/r/a.mon',
                          'a').command()[0] != 'ip'
    with pytest.raises(cluster.ClusterError):
        cluster.Cluster(tmp_path, 'rabbit://x', 'sqlite://', 3, 3, 1, MiB,
                        host_names=names)


def test_render_a_skipped_section():
    lines = bench_load.render({'skipped': 'RabbitMQ not reachable'})
    assert any('skipped: RabbitMQ not reachable' in x for x in lines)


def test_tenants_share_vms_in_pairs():
    from livesnap_tools.bench_load import cluster
    owners = [cluster.tenant_of(i, 40, 20) for i in range(40)]
    assert owners[:4] == [0, 0, 1, 1] and owners[-1] == 19
    assert [cluster.tenant_of(i, 3, 3) for i in range(3)] == [0, 1, 2]


def test_cpu_total_of_the_deployment_leaves_out_broker_and_bench():
    per_op = {'conductor': 1.0, 'agent': 2.0, 'qemu': 0.5, 'postgres': None,
              'rabbitmq': 9.0, 'clients': 9.0}
    assert bench_load._total(per_op, bench_load.OWN_KINDS) == 3.5
    assert bench_load._total({}, bench_load.OWN_KINDS) is None


def test_stop_processes_kills_what_ignores_sigterm():
    """The one stop used by Cluster.stop and ProcessDeployment.stop."""
    import subprocess
    import sys

    from livesnap_tools import fixtures
    polite = subprocess.Popen([sys.executable, '-c',
                               'import time; time.sleep(600)'])
    stubborn = subprocess.Popen(
        [sys.executable, '-c', 'import signal, sys, time; '
         'signal.signal(signal.SIGTERM, signal.SIG_IGN); '
         'print("ready", flush=True); time.sleep(600)'],
        stdout=subprocess.PIPE)
    assert stubborn.stdout.readline() == b'ready\n'
    try:
        fixtures.stop_processes([polite, stubborn], timeout=1)
        assert polite.returncode == -15
        assert stubborn.returncode == -9
        fixtures.stop_processes([polite, stubborn], timeout=1)  # repeatable
    finally:
        for proc in (polite, stubborn):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stubborn.stdout.close()


def test_an_offered_rate_spaces_a_workers_operations(monkeypatch):
    """With ``interval`` a worker starts its operations that far apart;
    one that fell behind starts at once and does not catch up.
    """
    from livesnap_tools.bench_load import tenants
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(tenants.time, 'time', lambda: now[0])
    monkeypatch.setattr(tenants.time, 'sleep', sleep)
    monkeypatch.setattr(tenants.random, 'uniform', lambda a, b: 0.0)
    worker = tenants.Worker({'name': 'vm1', 'token': 't'},
                            'http://127.0.0.1:1', deadline=1e9, depth=1,
                            poll_interval=0.01, interval=2.0)
    starts = []
    worker.client.request = lambda *a, **k: (
        starts.append(now[0]), (500, {}))[1]
    worker._failed = lambda action, why: None
    worker._operation('create', 'POST', '/x')   # at once
    now[0] += 0.5                               # it took 0.5 s
    worker._operation('create', 'POST', '/x')   # waits 1.5 s
    now[0] += 5.0                               # this one took 5 s
    worker._operation('create', 'POST', '/x')   # behind: at once
    worker._operation('create', 'POST', '/x')   # 2 s after that
    assert starts == [100.0, 102.0, 107.0, 109.0]
    assert slept == [1.5, 2.0]
