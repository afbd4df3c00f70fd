"""The agent's task runner: validation, journal, idempotent re-sends."""

import json
import os

import pytest

from agent import exception
from agent import journal as journal_mod
from agent import tasks
from agent import validation
from livesnap_tools import fixtures


class CountingDriver(object):
    def __init__(self):
        self.calls = 0

    def create_snapshot(self, disk, new_image, rec):
        self.calls += 1
        with rec.step('prepare'):
            pass
        return {'snapshot_image': disk['active_image'],
                'active_image': new_image, 'size_bytes': 1, 'online': False}


def _task(op='op-1'):
    return {'operation_id': op,
            'disk': {'qmp_socket': None, 'active_image': '/i/a.qcow2'},
            'new_image': '/i/b.qcow2'}


@pytest.fixture
def runner(tmp_path):
    return tasks.TaskRunner(CountingDriver(),
                            journal_mod.Journal(str(tmp_path / 'j')),
                            fixtures.FakeConductor(), 'hv1')


def test_same_task_twice_runs_once(runner):
    runner.run({}, 'create_snapshot', _task())
    runner.run({}, 'create_snapshot', _task())
    assert runner.driver.calls == 1
    assert len(runner.conductor_api.reports) == 2
    assert runner.conductor_api.reports[0] == runner.conductor_api.reports[1]
    assert runner.conductor_api.reports[0][1]['status'] == 'succeeded'


@pytest.mark.parametrize('task', [
    dict(_task(), new_image=5),
    dict(_task(), extra='x'),
    dict(_task(), operation_id='../../etc/passwd'),
    {'operation_id': 'op-2'},
    dict(_task(), disk={'active_image': ['x']}),
])
def test_invalid_tasks_are_refused(runner, task):
    runner.run({}, 'create_snapshot', task)
    assert runner.driver.calls == 0
    for op_id, report in runner.conductor_api.reports:
        assert report['status'] == 'failed'
        assert report['error_code'] == 'invalid_request'


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
