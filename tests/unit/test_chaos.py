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
    assert sorted(opts.kinds) == sorted(set(faults.KINDS)
                                        - set(faults.LIBVIRT_ONLY))
    assert opts.driver == 'qemu'
    assert opts.seed is not None
    quick = chaos.parse_args(['--quick', '--seed', '5'])
    assert quick.duration < 100 and quick.seed == 5


def test_options_libvirt_kinds():
    opts = chaos.parse_args(['--driver', 'libvirt'])
    assert sorted(opts.kinds) == sorted(faults.KINDS)
    with pytest.raises(SystemExit):
        chaos.parse_args(['--kinds', 'restart_libvirtd'])


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


def _model():
    from livesnap_tools.chaos import tenants
    m = tenants.Model(slot_size=10)
    # (seq, slot, pattern, began, ended)
    m.history = [(1, 1, 1, 10.0, 11.0), (2, 2, 2, 20.0, 21.0),
                 (3, 1, 3, 30.0, 31.0)]
    return m


def _reader(content):
    def read(image, pattern, offset, length):
        return content.get(offset // length, 0) == pattern
    return read


def test_prefixes_bounds():
    m = _model()
    assert checks.prefixes(m, 25.0, 26.0) == (2, 2)
    assert checks.prefixes(m, 15.0, 35.0) == (1, 3)
    assert checks.prefixes(m, 15.0, None) == (1, 3)


@pytest.mark.parametrize('content, requested, taken, ok', [
    ({1: 1, 2: 2}, 25.0, 26.0, True),     # exactly its moment
    ({1: 3, 2: 2}, 25.0, 26.0, False),    # a write after taken_at
    ({1: 1}, 25.0, 26.0, False),          # a write before it missing
    ({1: 1}, 15.0, 35.0, True),           # a late create: any prefix
    ({1: 3, 2: 2}, 15.0, 35.0, True),
    ({1: 3}, 15.0, 35.0, False),          # not a prefix (write 2 missing)
    ({1: 1, 2: 2}, 25.0, 12.0, False),    # taken before its request
])
def test_consistent(content, requested, taken, ok):
    why = checks.consistent('img', _model(), requested, taken,
                            read=_reader(content))
    assert (why is None) == ok, why
