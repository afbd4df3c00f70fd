"""Crafted RPC tasks against a real agent: TaskRunner + QemuDriver on
temporary image directories, real qemu-img.

Each hostile task (path traversal, symlink escape, absolute path elsewhere,
wrong types, unknown actions and operation ids) must be refused with a
clear error in the report, and leave every file, inside the image
directory and outside it, exactly as it was.
"""

import hashlib
import os

import pytest

from agent.driver.qemu import driver as qemu
from agent import images
from agent import journal as journal_mod
from agent import manager
from agent import task_runner
from livesnap_tools import fixtures

MiB = 1024 * 1024


@pytest.fixture
def host(tmp_path):
    """An image dir with a base image and a snapshot chain, a directory
    outside it with a victim image, and a runner with a real driver.
    """
    images_dir = tmp_path / 'images'
    outside = tmp_path / 'outside'
    images_dir.mkdir()
    outside.mkdir()
    base = str(images_dir / 'base.qcow2')
    images.create_base(base, MiB)
    top = str(images_dir / 'top.qcow2')
    images.create_overlay(top, base)
    victim = str(outside / 'victim.qcow2')
    images.create_base(victim, MiB)
    (outside / 'secret').write_text('do not touch')
    driver = qemu.QemuDriver([str(images_dir)])
    runner = task_runner.TaskRunner(
        driver, journal_mod.Journal(str(tmp_path / 'journal')),
        fixtures.FakeConductor(), 'hv1')
    return {'tmp': tmp_path, 'images': str(images_dir),
            'outside': str(outside), 'base': base, 'top': top,
            'victim': victim, 'runner': runner}


def _tree(root):
    """Every file under ``root`` (but the journal): size and digest."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != 'journal']
        for name in filenames + [d for d in dirnames]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                state[path] = ('link', os.readlink(path))
            elif os.path.isdir(path):
                state[path] = ('dir',)
            else:
                with open(path, 'rb') as f:
                    state[path] = ('file', os.path.getsize(path),
                                   hashlib.sha256(f.read()).hexdigest())
    return state


def _refused(host, action, task, code, *words):
    """Run ``task``; assert one failed report with ``code`` whose error
    mentions ``words``, and that no file changed.
    """
    before = _tree(str(host['tmp']))
    runner = host['runner']
    runner.run({}, action, task)
    after = _tree(str(host['tmp']))
    assert after == before, 'files changed: %s' % (
        set(after.items()) ^ set(before.items()))
    assert len(runner.conductor_api.reports) == 1, \
        runner.conductor_api.reports
    op_id, report = runner.conductor_api.reports[0]
    assert report['status'] == 'failed', report
    assert report['error_code'] == code, report
    for word in words:
        assert word in report['error'], report['error']
    assert 'Traceback' not in report['error']
    return report


def _loc(path, disk=False):
    loc = {'driver': 'qemu', 'path': path}
    if disk:
        loc['qmp_socket'] = None
    return loc


def _disk(host, active=None):
    return _loc(active or host['top'], disk=True)


def test_a_path_task_of_rpc_1_3_is_refused(host):
    """The path tasks of agent RPC 1.0 to 1.3 fit no schema: refused as
    invalid before any file is looked at.
    """
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1',
              'disk': {'qmp_socket': None, 'active_image': host['top']},
              'new_image': os.path.join(host['images'], 'n.qcow2')},
             'invalid_request', 'layer_name')


def test_dangling_symlink_new_layer_escape_refused(host):
    """A new layer named through a symlink to a file that does not exist
    yet outside: qemu-img would create it there.
    """
    target = os.path.join(host['outside'], 'created.qcow2')
    link = os.path.join(host['images'], 'new.qcow2')
    os.symlink(target, link)
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1', 'disk': _disk(host),
              'layer_name': 'new'},
             'path_not_allowed', 'outside')
    assert not os.path.exists(target)


def test_symlinked_directory_escape_refused(host):
    os.symlink(host['outside'], os.path.join(host['images'], 'sub'))
    _refused(host, 'delete_snapshot',
             {'operation_id': 'op-1', 'mode': 'physical', 'disk': _disk(host),
              'snapshot': _loc(os.path.join(host['images'], 'sub',
                                            'victim.qcow2'))},
             'path_not_allowed', 'outside')
    assert os.path.exists(host['victim'])


def test_physical_delete_elsewhere_refused(host):
    _refused(host, 'delete_snapshot',
             {'operation_id': 'op-1', 'mode': 'physical', 'disk': _disk(host),
              'snapshot': _loc(host['victim'])},
             'path_not_allowed', 'outside')


def test_delete_of_image_dir_itself_refused(host):
    _refused(host, 'delete_snapshot',
             {'operation_id': 'op-1', 'mode': 'physical', 'disk': _disk(host),
              'snapshot': _loc(host['images'])},
             'path_not_allowed')


def test_revert_onto_a_snapshot_elsewhere_refused(host):
    _refused(host, 'revert_disk',
             {'operation_id': 'op-1', 'disk': _disk(host),
              'snapshot': _loc(host['victim']), 'layer_name': 'r',
              'discard': None},
             'path_not_allowed', 'outside')


@pytest.mark.parametrize('action,task,where', [
    ('delete_snapshot', {'operation_id': 'op-1', 'mode': 'shred',
                         'disk': _loc('/a/b', True),
                         'snapshot': _loc('/a/c')}, 'mode'),
    ('delete_snapshot', {'operation_id': 'op-1', 'mode': 'merge',
                         'disk': _loc('/a/b', True),
                         'snapshot': _loc('/a/c')}, 'merge'),
    ('revert_disk', {'operation_id': 'op-1', 'disk': _loc('/a', True),
                     'snapshot': ['/a/b'], 'layer_name': 'c',
                     'discard': None}, 'snapshot'),
    ('create_snapshot', {'operation_id': 'op-1', 'disk': [],
                         'layer_name': 'n'}, 'disk'),
])
def test_wrong_types_and_shapes_refused(host, action, task, where):
    _refused(host, action, task, 'invalid_request', where)


@pytest.mark.parametrize('task', [None, [], 'rm -rf /', 42,
                                  {'operation_id': 7},
                                  {'operation_id': '..'},
                                  {'operation_id': '../../etc/passwd'},
                                  {'operation_id': 'op\n'}])
def test_garbage_tasks_refused_without_a_report_to_a_bad_id(host, task):
    """Without a usable operation id there is nobody to report to; the
    task is refused before anything, including the journal, is touched.
    """
    before = _tree(str(host['tmp']))
    runner = host['runner']
    runner.run({}, 'create_snapshot', task)
    assert _tree(str(host['tmp'])) == before
    assert not os.listdir(str(host['tmp'] / 'journal'))
    for op_id, report in runner.conductor_api.reports:
        assert report['error_code'] == 'invalid_request'


def test_unknown_action_refused(host):
    _refused(host, 'format_disk', {'operation_id': 'op-1'},
             'invalid_request', 'Unknown action')


@pytest.mark.parametrize('operation_id', [
    'never-seen', '../../etc/passwd', '..', '.hidden', '', None, 7, [],
    {'id': 'x'}, 'x' * 5000, 'op\x00'])
def test_get_operation_of_unknown_or_hostile_ids(host, operation_id):
    before = _tree(str(host['tmp']))
    mgr = manager.AgentManager(host['runner'])
    assert mgr.get_operation({}, operation_id) is None
    assert _tree(str(host['tmp'])) == before


# -- locator tasks (agent RPC 1.4) --------------------------------------------
def test_locator_disk_elsewhere_refused(host):
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1', 'disk': _loc(host['victim'], True),
              'layer_name': 'n'}, 'path_not_allowed', 'outside')


def test_locator_symlink_escape_refused(host):
    link = os.path.join(host['images'], 'innocent.qcow2')
    os.symlink(host['victim'], link)
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1', 'disk': _loc(link, True),
              'layer_name': 'n'}, 'path_not_allowed', host['victim'])


@pytest.mark.parametrize('name', ['../n', '.n', 'a/b', '', 'n\n', 5])
def test_locator_layer_names_are_ids_only(host, name):
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1', 'disk': _loc(host['top'], True),
              'layer_name': name}, 'invalid_request', 'layer_name')


@pytest.mark.parametrize('field', ['snapshot', 'child', 'parent'])
def test_locator_merge_elsewhere_refused(host, field):
    task = {'operation_id': 'op-1', 'mode': 'merge',
            'disk': _loc(host['top'], True), 'snapshot': _loc(host['base']),
            'parent': None, 'child': _loc(host['top'], True)}
    task[field] = _loc(host['victim'])
    _refused(host, 'delete_snapshot', task, 'path_not_allowed', 'outside')


def test_locator_revert_discarding_elsewhere_refused(host):
    _refused(host, 'revert_disk',
             {'operation_id': 'op-1', 'disk': _loc(host['top'], True),
              'snapshot': _loc(host['base']), 'layer_name': 'r',
              'discard': _loc(host['victim'])},
             'path_not_allowed', 'outside')


@pytest.mark.parametrize('locator,where', [
    ({'driver': 'qemu', 'path': 5}, 'disk/path'),
    ({'driver': 'Qemu;rm', 'path': '/a/b'}, 'disk/driver'),
    ({'driver': 'qemu', 'path': '/a/b', 'x': ['y']}, 'disk/x'),
    ({'driver': 'qemu', 'path': '/a/b\x00c'}, 'disk/path'),
    ({'path': '/a/b'}, 'disk'),
])
def test_locator_shapes_refused(host, locator, where):
    _refused(host, 'create_snapshot',
             {'operation_id': 'op-1', 'disk': locator, 'layer_name': 'n'},
             'invalid_request', where)


def test_a_valid_locator_task_works(host):
    runner = host['runner']
    runner.run({}, 'create_snapshot', {'operation_id': 'op-ok',
                                       'disk': _loc(host['top'], True),
                                       'layer_name': 'd1-op-ok'})
    (op_id, report), = runner.conductor_api.reports
    assert report['status'] == 'succeeded', report
    new = os.path.join(host['images'], 'd1-op-ok.qcow2')
    # the live layer keeps its path; the snapshot is the new file (issue 20)
    assert report['result']['disk'] == _loc(host['top'], True)
    assert report['result']['snapshot'] == _loc(new)
    assert images.backing_file(host['top']) == new
