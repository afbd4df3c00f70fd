"""The agent's task runner: validation, journal, idempotent re-sends."""

import json
import os

import pytest

from agent.driver import fake
from agent import exception
from agent import journal as journal_mod
from agent import task_runner
from agent import validation
from livesnap_tools import fixtures


def _task(op='op-1'):
    return {'operation_id': op,
            'disk': {'driver': 'fake', 'vm': None, 'path': '/i/a'},
            'layer_name': 'b'}


@pytest.fixture
def runner(tmp_path):
    driver = fake.FakeDriver(['/i'])
    driver.add_disk('/i/a')
    return task_runner.TaskRunner(driver,
                                  journal_mod.Journal(str(tmp_path / 'j')),
                                  fixtures.FakeConductor(), 'hv1')


def test_same_task_twice_runs_once(runner):
    runner.run({}, 'create_snapshot', _task())
    runner.run({}, 'create_snapshot', _task())
    assert runner.driver.calls['create_snapshot'] == 1
    assert len(runner.conductor_api.reports) == 2
    assert runner.conductor_api.reports[0] == runner.conductor_api.reports[1]
    assert runner.conductor_api.reports[0][1]['status'] == 'succeeded'


@pytest.mark.parametrize('task', [
    dict(_task(), layer_name=5),
    dict(_task(), layer_name='../x'),
    dict(_task(), extra='x'),
    dict(_task(), operation_id='../../etc/passwd'),
    {'operation_id': 'op-2'},
    dict(_task(), disk={'driver': 'fake', 'path': ['x']}),
    dict(_task(), disk={'driver': 'fake', 'path': 'relative'}),
    dict(_task(), disk={'path': '/i/a'}),
    # the path tasks of RPC 1.3 fit no schema
    {'operation_id': 'op-3', 'disk': {'active_image': ['x']},
     'new_image': '/i/b.qcow2'},
    {'operation_id': 'op-4', 'disk': {'active_image': '/i/a.qcow2'},
     'new_image': '/elsewhere/b.qcow2'},
])
def test_invalid_tasks_are_refused(runner, task):
    runner.run({}, 'create_snapshot', task)
    assert runner.driver.calls['create_snapshot'] == 0
    for op_id, report in runner.conductor_api.reports:
        assert report['status'] == 'failed'
        assert report['error_code'] == 'invalid_request'


def test_locators_of_another_driver_are_refused(runner):
    task = dict(_task(), disk={'driver': 'qemu', 'qmp_socket': None,
                               'path': '/i/a'})
    runner.run({}, 'create_snapshot', task)
    assert runner.driver.calls['create_snapshot'] == 0
    report = runner.conductor_api.reports[0][1]
    assert report['error_code'] == 'invalid_request'


def test_locator_outside_the_image_dirs_is_refused(runner):
    runner.run({}, 'create_snapshot',
               dict(_task(), disk={'driver': 'fake', 'path': '/etc/a'}))
    assert runner.driver.calls['create_snapshot'] == 0
    assert runner.conductor_api.reports[0][1]['error_code'] == \
        'path_not_allowed'


def test_create_result_and_the_fake_tree(runner):
    runner.run({}, 'create_snapshot', _task())
    report = runner.conductor_api.reports[0][1]
    assert report['result']['snapshot'] == {'driver': 'fake',
                                            'path': '/i/a'}
    assert report['result']['disk']['path'] == '/i/b'
    assert runner.driver.layers == {'/i/a': None, '/i/b': '/i/a'}


def test_unknown_action():
    with pytest.raises(exception.InvalidRequest):
        validation.validate('format_disk', _task())


def test_journal_is_atomic_and_lists_unfinished(tmp_path):
    j = journal_mod.Journal(str(tmp_path))
    j.record('a', state='running', step='pause')
    j.record('b', state='done', report={'status': 'succeeded'})
    assert [e['operation_id'] for e in j.unfinished()] == ['a']
    assert j.get('a')['step'] == 'pause'
    assert j.get('missing') is None
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    with open(tmp_path / 'b.json') as f:
        assert json.load(f)['report'] == {'status': 'succeeded'}
    with pytest.raises(ValueError):
        j.get('../x')


def _revert(runner, op):
    disk = runner.driver.add_disk('/i/live', backing='/i/a')
    runner.run({}, 'revert_disk', {
        'operation_id': op, 'disk': disk,
        'snapshot': {'driver': 'fake', 'path': '/i/a'},
        'layer_name': 'r-' + op, 'discard': disk})
    return [r for o, r in runner.conductor_api.reports if o == op][0]


def test_revert_discards_the_old_live_layer(runner):
    report = _revert(runner, 'op-r')
    assert report['status'] == 'succeeded', report
    assert report['result']['disk']['path'] == '/i/r-op-r'
    assert runner.driver.layers == {'/i/a': None, '/i/r-op-r': '/i/a'}


def test_revert_that_cannot_discard_leaves_the_disk_as_it_was(runner):
    runner.driver.layers['/i/other'] = '/i/live'  # built on the live layer
    report = _revert(runner, 'op-r')
    assert report['status'] == 'failed'
    assert report['error_code'] == 'image_in_use'
    assert '/i/r-op-r' not in runner.driver.layers
    assert runner.driver.layers['/i/live'] == '/i/a'


def test_inspect_takes_files_listed_as_plain_paths(runner, tmp_path):
    """A driver that lists every file by path (as base.Driver first said):
    the files its locators name are not reported.
    """
    runner.driver.inspect = lambda locators: {
        'images': [{'locator': loc, 'exists': True} for loc in locators],
        'files': ['/i/a', '/i/orphan']}
    result = runner.inspect([{'driver': 'fake', 'path': '/i/a'}])
    assert result['files'] == [{'path': '/i/orphan', 'locator': None}]


def test_progress_is_throttled(runner, monkeypatch):
    """A copy's progress: nothing in its first interval, at most one
    message per interval after, never 100 (the report says it).
    """
    now = [1000.0]
    monkeypatch.setattr(task_runner.time, 'monotonic', lambda: now[0])
    sent = []
    runner.conductor_api.report_progress = \
        lambda ctxt, op_id, percent: sent.append(percent)
    progress = runner._progress_cb({}, 'op-1')
    progress(10.0)
    now[0] += 0.5
    progress(40.0)
    assert sent == []            # a copy shorter than the interval
    now[0] += 0.6
    progress(50.0)
    progress(60.0)
    assert sent == [50.0]
    now[0] += 1.0
    progress(50.0)               # the same figure again: nothing new
    progress(100.0)
    assert sent == [50.0]
    now[0] += 0.1
    progress(70.0)
    assert sent == [50.0, 70.0]
