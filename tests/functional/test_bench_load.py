"""``tools/bench --only load,ceiling`` at a tiny size, so it cannot rot.

Two agents, two VMs, a few seconds per phase with one then two
conductors, over the real RabbitMQ and PostgreSQL.  No figure is checked
(speed is for the benchmark, not for tests): the section must run, drive
operations through both phases, leave every VM running, and remove every
process, file, vhost and database it created.
"""

import json
import os
import subprocess
import sys

import pytest

from livesnap_tools import fixtures

pytestmark = pytest.mark.functional

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _needs_services():
    missing = [name for name, ok in (
        ('RabbitMQ', fixtures.rabbit_available()),
        ('PostgreSQL', fixtures.postgres_available())) if not ok]
    if missing:
        if os.environ.get('LIVESNAP_REQUIRE_SERVICES'):
            pytest.fail('%s required' % ' and '.join(missing))
        pytest.skip('%s not reachable' % ' and '.join(missing))


def _processes_mentioning(text):
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % entry, 'rb') as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_load_bench_tiny_run_cleans_up():
    _needs_services()
    proc = subprocess.run(
        [sys.executable, '-m', 'livesnap_tools.bench', '--only',
         'load,ceiling', '--json', '--agents', '2', '--vms', '2',
         '--tenants', '1', '--duration', '3', '--depth', '2',
         '--baseline-n', '2', '--conductors', '1,2', '--rate', '8'],
        cwd=TOP, capture_output=True, text=True, timeout=600,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report['errors'] == {}
    load = report['sections']['load']
    assert load['skipped'] is None
    assert [p['conductors'] for p in load['phases']] == [1, 2]
    for phase in load['phases']:
        assert phase['crashes'] == []
        assert phase['creates'] > 0, phase
        assert phase['bare_pause_ms']['n'] == 2 * 2
        assert phase['create_pause_ms']['n'] > 0
        assert phase['requests'] > 0
        assert phase['cpu_s']['conductor'] > 0
        assert phase['peak_rss_kib']['agent']['n'] == 2
    assert set(load['vm_status'].values()) == {'running'}
    # the table renders from the same data
    from livesnap_tools import bench_load
    assert 'operations/s' in '\n'.join(bench_load.render(load))
    # the ceiling section: QEMU's and the driver's CPU per operation
    ceiling = report['sections']['ceiling']
    assert [r['kind'] for r in ceiling['rows']] == ['create', 'merge',
                                                     'write']
    assert ceiling['ops'] > 0 and ceiling['ceiling_qemu'] > 0
    assert ceiling['ceiling_qemu_driver'] <= ceiling['ceiling_qemu']
    from livesnap_tools import bench
    assert 'ceiling op/s' in bench.render(report)
    # nothing left behind
    assert not os.path.exists(load['state_dir'])
    assert _processes_mentioning(load['state_dir']) == []
    vhosts = subprocess.run(['rabbitmqctl', '-q', 'list_vhosts'],
                            capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL).stdout.split()
    assert load['vhost'] not in vhosts
    import psycopg2
    conn = psycopg2.connect(host='127.0.0.1', user='postgres', dbname='test')
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT 1 FROM pg_database WHERE datname = %s',
                        (load['database'],))
            assert cur.fetchall() == []
    finally:
        conn.close()
