"""The chaos run's pure parts: options, error grouping, the table."""

import collections

import pytest

from livesnap_tools import chaos
from livesnap_tools.chaos import checks
from livesnap_tools.chaos import faults


def test_options_defaults_and_quick():
    opts = chaos.parse_args([])
    assert (opts.agents, opts.vms, opts.tenants, opts.conductors,
            opts.duration) == (6, 12, 6, 2, 300.0)
    assert sorted(opts.kinds) == sorted(faults.KINDS)
    assert opts.seed is not None
    quick = chaos.parse_args(['--quick', '--seed', '5'])
    assert quick.duration < 100 and quick.seed == 5


def test_options_refuse_unknown_kinds():
    with pytest.raises(SystemExit):
        chaos.parse_args(['--kinds', 'kill_agent,meteor'])


def test_cheap_kinds_are_kinds():
    assert set(faults.CHEAP) <= set(faults.KINDS)


@pytest.mark.parametrize('error, code', [
    ('Not enough space for the merge in /x: it needs 1 MiB', 'no_space'),
    ('QMP write to /a/vm.qmp failed: [Errno 32] Broken pipe', 'qmp_error'),
    ('The task could not be sent to the agent: X', 'rpc_error'),
    (None, 'none'),
])
def test_code_of(error, code):
    assert checks.code_of(error) == code


def test_render_says_fail_and_pass():
    res = {
        'seed': 3, 'setup_s': 1.0,
        'shape': {'agents': 2, 'vms': 4, 'tenants': 2, 'conductors': 2,
                  'duration': 40, 'depth': 3, 'gap_min': 1, 'gap_max': 3,
                  'kinds': ['kill_agent']},
        'faults': {'kill_agent': 7}, 'faults_skipped': {'kill_agent': 1},
        'operations': {'create': {
            'started': 10, 'succeeded': 8,
            'failed': collections.Counter({'no_space': 2}),
            'other': collections.Counter(), 'samples': {
                'no_space': 'Not enough space'}}},
        'refusals': collections.Counter({'create: HTTP 409 disk_busy': 2}),
        'disks_free_after_s': None, 'settle_bound_s': 60,
        'longest_pause_ms': 12.5, 'pause_vm': 'vm001', 'qemu_killed': [],
        'worker_errors': 0, 'worker_error_samples': [], 'fault_errors': [],
        'boot_errors': [],
        'checks': [('no VM paused', True, []),
                   ('every disk free', False, ['vm001 locked by abc'])]}
    text = chaos.render(res)
    assert 'kill_agent' in text and 'no_space 2' in text
    assert 'NOT within 60 s' in text
    assert 'FAIL every disk free' in text and 'PASS' in text
    assert chaos.failed(res) == ['every disk free']
