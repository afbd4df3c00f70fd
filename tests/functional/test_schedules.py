"""A snapshot policy at work on a running VM, end to end: two conductors
(separate processes) share PostgreSQL and the real RabbitMQ, and their own
periodic tasks run a policy with a short interval.  Each slot runs exactly
once; pruning merges the policy's old snapshots away while the tenant's
manual snapshot and the one it protected survive with their data."""

import json
import time

import pytest

from agent import images
from livesnap_tools import fixtures
from livesnap_tools import testvm
from tests.functional import scenarios
from tests.functional import tree_check

pytestmark = pytest.mark.functional

MiB = scenarios.MiB
EXTRA = ('[conductor]\nperiodic_interval = 0.5\npolicy_min_interval = 1\n')
INTERVAL = 3
KEEP = 2
RUNS = 6


def _wait(what, predicate, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError('timed out waiting for %s' % what)
        time.sleep(0.2)


def test_policy_snapshots_and_prunes_a_running_vm(tmp_path, rabbit_url,
                                                  postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url,
                                     extra=EXTRA)
    with fixtures.running(dep):
        dep.start_conductor(name='conductor2', port=fixtures.free_port())
        vm, base = scenarios.start_vm(dep, tmp_path)
        try:
            _scenario(dep, vm, base, postgres_url)
        finally:
            vm.kill()


def _scenario(dep, vm, base, database_url):
    vm.write(0xaa, 0, MiB)
    manual, op = scenarios.create_snapshot(dep, 'srv1', 'manual')
    assert op['status'] == 'succeeded' and op['mode'] == 'online', op
    vm.write(0xbb, 0, MiB)
    vm.flush()
    policy = dep.ok('POST', '/v1/policies', {'policy': {
        'name': 'often', 'server_id': 'srv1', 'interval': INTERVAL,
        'retention': {'keep_last': KEEP}}}, status=201)['policy']
    path = '/v1/policies/%s' % policy['id']

    def runs():
        return dep.ok('GET', path + '/runs')['runs']

    def first_available():
        done = [r for r in runs() if r['outcome'] == 'created']
        if not done:
            return None
        snap = dep.ok('GET', '/v1/snapshots/%s' % done[-1]['snapshot_id'])[
            'snapshot']
        return snap if snap['status'] == 'available' else None

    pinned = _wait('the first scheduled snapshot', first_available)
    dep.ok('PATCH', '/v1/snapshots/%s' % pinned['id'],
           {'snapshot': {'protected': True}})
    vm.write(0xcc, 8 * MiB, MiB)
    vm.flush()

    def enough():
        rs = runs()
        created = [r for r in rs if r['outcome'] == 'created']
        pruned = [x for r in rs for x in r['pruned_ids']]
        return len(created) >= RUNS and len(pruned) >= 2

    _wait('%d runs and some pruning' % RUNS, enough)
    dep.ok('PATCH', path, {'policy': {'enabled': False}})

    def settled():
        rs = runs()
        if any(r['outcome'] == 'pending' or r['prune_status'] in (
                'waiting', 'pending') for r in rs):
            return None
        ops = dep.ok('GET', '/v1/operations?server_id=srv1')['operations']
        if any(o['status'] in ('pending', 'running') for o in ops):
            return None
        return rs, ops

    rs, ops = _wait('the policy to settle', settled)

    # Exactly once: one run per slot, one snapshot per created run, and
    # no create the runs do not account for.
    slots = [r['scheduled_for'] for r in rs]
    assert len(slots) == len(set(slots)), slots
    created = [r for r in rs if r['outcome'] == 'created']
    assert len({r['snapshot_id'] for r in created}) == len(created)
    creates = [o for o in ops if o['action'] == 'create']
    assert len(creates) == 1 + len(created), (len(creates), len(created))
    for r in rs:
        # A slot may be skipped while a merge holds the disk past it.
        assert r['outcome'] in ('created', 'skipped'), r
        if r['outcome'] == 'skipped':
            assert r['reason_code'] in ('disk_busy', 'missed'), r
    assert all(o['status'] == 'succeeded' for o in ops), ops
    assert {o['mode'] for o in ops if o['action'] == 'delete'} <= {
        'merge', 'physical'}

    # What is left: the manual snapshot, the protected one, and the
    # newest KEEP of the policy's.
    left = {s['id']: s for s in dep.ok(
        'GET', '/v1/servers/srv1/snapshots')['snapshots']}
    assert left[manual]['policy_id'] is None
    assert left[pinned['id']]['protected']
    ours = [s for s in left.values()
            if s['policy_id'] == policy['id'] and not s['protected']]
    assert len(ours) == KEEP, left
    newest = max(created, key=lambda r: r['scheduled_for'])
    assert newest['snapshot_id'] in left
    pruned = {x for r in rs for x in r['pruned_ids']}
    assert len(pruned) == len(created) - 1 - KEEP
    assert not pruned & {manual, pinned['id']}
    assert set(left) == {manual} | {r['snapshot_id'] for r in created} \
        - pruned

    # Their data survived the merges; the VM never stopped.
    assert vm.status() == 'running'
    disk, snaps = tree_check.db_rows(database_url, 'srv1')
    image = {s.id: s.image for s in snaps}
    assert testvm.read_pattern_ok(image[manual], 0xaa, 0, MiB)
    assert testvm.read_pattern_ok(image[pinned['id']], 0xbb, 0, MiB)
    assert testvm.read_pattern_ok(image[pinned['id']], 0x00, 8 * MiB, MiB)
    assert testvm.read_pattern_ok(disk.active_image, 0xbb, 0, MiB)
    assert testvm.read_pattern_ok(disk.active_image, 0xcc, 8 * MiB, MiB)
    for path_ in list(image.values()) + [disk.active_image]:
        images.check(path_, force_share=True)


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_livesnap_cli_against_the_conductor(inprocess):
    """The ``livesnap`` client, as a process, manages a policy and pins a
    snapshot on a live conductor (an offline disk).
    """
    from tests.functional.test_cli import livesnap
    dep = inprocess
    dep.register_server('srv1', scenarios.new_base_image(dep, 'srv1',
                                                         4 * MiB))
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'manual')
    assert op['status'] == 'succeeded', op

    rc, out, err = livesnap(dep, 'snapshot', 'protect', snap_id, '-f',
                            'json')
    assert rc == 0, err
    assert json.loads(out)['protected'] is True
    rc, out, err = livesnap(dep, 'snapshot', 'delete', snap_id)
    assert rc == 1 and 'snapshot_protected' in err, (out, err)
    rc, out, err = livesnap(dep, 'snapshot', 'unprotect', snap_id, '-f',
                            'json')
    assert rc == 0 and json.loads(out)['protected'] is False, err

    rc, out, err = livesnap(dep, 'policy', 'create', 'srv1', '--name',
                            'nightly', '--cron', '0 2 * * *', '--timezone',
                            'Europe/Paris', '--keep-daily', '7',
                            '--keep-weekly', '4', '-f', 'json')
    assert rc == 0, err
    policy = json.loads(out)
    assert policy['cron'] == '0 2 * * *' and policy['next_run'], policy
    assert policy['retention']['keep_daily'] == 7
    rc, out, err = livesnap(dep, 'policy', 'list', '-f', 'json')
    assert rc == 0 and len(json.loads(out)) == 1, err
    assert policy['id'] in out
    rc, out, err = livesnap(dep, 'policy', 'update', policy['id'],
                            '--disable', '-f', 'json')
    assert rc == 0, err
    assert json.loads(out)['enabled'] is False
    rc, out, err = livesnap(dep, 'policy', 'show', policy['id'])
    assert rc == 0 and 'nightly' in out, err
    rc, out, err = livesnap(dep, 'policy', 'runs', policy['id'], '-f',
                            'json')
    assert rc == 0 and json.loads(out) == [], err
    rc, out, err = livesnap(dep, 'policy', 'create', 'srv1', '--name',
                            'bad', '--cron', '0 2 31 2 *')
    assert rc == 1 and 'bad_request' in err, (out, err)
    rc, out, err = livesnap(dep, 'policy', 'delete', policy['id'])
    assert rc == 0, err
    rc, out, err = livesnap(dep, 'policy', 'show', policy['id'])
    assert rc == 1 and 'not_found' in err, (out, err)
