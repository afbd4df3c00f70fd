"""The driver interface: loading by name, the fake driver's tree, the task
module both sides use (locator tasks), migration 0002."""

import pytest
import sqlalchemy as sa

from agent import driver as driver_mod
from agent.driver import base
from agent.driver import fake
from agent.driver.qemu import driver as qemu
from agent import exception
from agent.steps import StepRecorder
from conductor.db import migration
from livesnap import tasks


def test_drivers_load_by_name():
    qemu_driver = driver_mod.load('qemu', ['/img'], pause_deadline=2.0,
                                  unknown_option=1)
    assert isinstance(qemu_driver, qemu.QemuDriver)
    assert isinstance(qemu_driver, base.Driver)
    assert qemu_driver.pause_deadline == 2.0
    assert isinstance(driver_mod.load('fake', ['/f']), fake.FakeDriver)
    with pytest.raises(exception.InvalidRequest):
        driver_mod.load('no-such-driver', ['/img'])


def test_the_loader_fills_the_constructor_from_the_configuration():
    """One configuration path: the drivers never read CONF; the loader
    gives them what their ``conf_options`` reads from it.
    """
    from oslo_config import cfg

    from livesnap.conf import agent as agent_conf
    from livesnap.conf import libvirt as libvirt_conf
    conf = cfg.ConfigOpts()
    agent_conf.register_opts(conf)
    libvirt_conf.register_opts(conf)
    conf([])
    conf.set_override('qmp_timeout', 7.0, 'agent')
    conf.set_override('reserved_space_mb', 3, 'agent')
    conf.set_override('merge_timeout', 42.0, 'agent')
    conf.set_override('uri', 'test:///x', 'libvirt')
    conf.set_override('snapshot_pause', 'suspend', 'libvirt')
    qemu_driver = driver_mod.load('qemu', ['/img'], conf=conf)
    assert (qemu_driver.qmp_timeout, qemu_driver.reserved_bytes,
            qemu_driver.job_timeout) == (7.0, 3 * 1024 * 1024, 42.0)
    lv = driver_mod.load('libvirt', ['/img'], conf=conf,
                         pause_deadline=1.5)
    assert (lv.uri, lv.snapshot_pause, lv.job_timeout,
            lv.pause_deadline) == ('test:///x', 'suspend', 42.0, 1.5)
    assert isinstance(driver_mod.load('fake', ['/f'], conf=conf),
                      fake.FakeDriver)


def test_qemu_layer_locator_keeps_the_old_file_names():
    drv = qemu.QemuDriver(['/img'])
    disk = {'driver': 'qemu', 'qmp_socket': None, 'path': '/img/a/vda.qcow2'}
    assert drv.layer_locator(disk, 'd1-op1') == {
        'driver': 'qemu', 'path': '/img/a/d1-op1.qcow2'}
    with pytest.raises(exception.InvalidRequest):
        drv.layer_locator(disk, '../x')
    with pytest.raises(exception.InvalidRequest):
        drv.check({'driver': 'libvirt', 'path': '/img/a/vda.qcow2'})
    with pytest.raises(exception.PathNotAllowed):
        drv.check({'driver': 'qemu', 'path': '/etc/passwd'})


def test_fake_driver_keeps_a_tree():
    drv = fake.FakeDriver(['/i'])
    drv.add_vm('vm1', running=False)
    disk = drv.add_disk('/i/base', vm='vm1')
    first = drv.create_snapshot(disk, 'l1', StepRecorder())
    disk = first['disk']
    second = drv.create_snapshot(disk, 'l2', StepRecorder())
    disk = second['disk']
    assert drv.layers == {'/i/base': None, '/i/l1': '/i/base',
                          '/i/l2': '/i/l1'}
    # merge the middle layer into the live one
    result = drv.merge(disk, second['snapshot'], first['snapshot'], disk,
                       StepRecorder(), child_is_leaf=True)
    assert result['child'] == disk and result['disk'] == disk
    assert drv.layers == {'/i/base': None, '/i/l2': '/i/base'}
    # idempotent
    drv.merge(disk, second['snapshot'], first['snapshot'], disk,
              StepRecorder())
    with pytest.raises(exception.ImageInUse):
        drv.delete_image(first['snapshot'], StepRecorder())
    reverted = drv.revert(disk, first['snapshot'], 'r1', StepRecorder())
    drv.delete_image(disk, StepRecorder())
    assert drv.layers == {'/i/base': None, '/i/r1': '/i/base'}
    seen = drv.inspect([reverted['disk'], {'driver': 'fake',
                                           'path': '/etc/x'}])
    assert seen['images'][0]['backing'] == drv.image('/i/base')
    assert seen['images'][1]['error']
    assert seen['files'] == [{'path': '/i/base', 'locator': None}]
    drv.add_vm('vm1', running=True, paused=True)
    with pytest.raises(exception.ServerRunning):
        drv.revert(reverted['disk'], first['snapshot'], 'r2',
                   StepRecorder())
    assert drv.resume(reverted['disk']) is True
    assert drv.resume(reverted['disk']) is False


DISK = {'driver': 'qemu', 'qmp_socket': '/run/vm.qmp',
        'path': '/img/vda.qcow2'}
SNAP = {'driver': 'qemu', 'path': '/img/s1.qcow2'}
PARENT = {'driver': 'qemu', 'path': '/img/s0.qcow2'}


@pytest.mark.parametrize('action,task', [
    ('create_snapshot', tasks.create_task(DISK, 'd1-op1')),
    ('delete_snapshot', tasks.delete_task('physical', DISK, SNAP)),
    ('delete_snapshot', tasks.delete_task('merge', DISK, SNAP,
                                          parent=PARENT, child=DISK,
                                          child_is_leaf=True)),
    ('delete_snapshot', tasks.delete_task('merge', DISK, SNAP, parent=None,
                                          child=PARENT)),
    ('revert_disk', tasks.revert_task(DISK, SNAP, 'd1-op1', discard=DISK)),
])
def test_tasks_validate_to_themselves(action, task):
    """A task the conductor builds passes the agent's edge unchanged."""
    task = dict(task, operation_id='op1')
    assert tasks.validate(action, task) == task


def test_migration_0002_carries_rows_over(tmp_path):
    engine = sa.create_engine('sqlite:///%s' % (tmp_path / 'm.sqlite'))
    migration.upgrade(engine, '0001')
    with engine.begin() as c:
        c.execute(sa.text(
            "INSERT INTO servers (id, name, project_id, host, qmp_socket, "
            "created_at) VALUES ('s1', 's1', 'p', 'h', '/run/s1.qmp', "
            "'2026-01-01'), ('s2', 's2', 'p', 'h', NULL, '2026-01-01')"))
        c.execute(sa.text(
            "INSERT INTO disks (id, server_id, name, active_image) VALUES "
            "('d1', 's1', 'vda', '/img/d1-op.qcow2'), "
            "('d2', 's2', 'vda', '/img/b.qcow2')"))
        c.execute(sa.text(
            "INSERT INTO snapshots (id, disk_id, project_id, name, status, "
            "image, created_at, updated_at) VALUES "
            "('x1', 'd1', 'p', 'n', 'available', '/img/a.qcow2', "
            "'2026-01-01', '2026-01-01'), "
            "('x2', 'd1', 'p', 'n', 'error', NULL, '2026-01-01', "
            "'2026-01-01')"))
    migration.upgrade(engine)
    from conductor.db import models
    with sa.orm.Session(engine) as s:
        assert s.get(models.Server, 's1').driver == 'qemu'
        assert s.get(models.Disk, 'd1').locator == {
            'driver': 'qemu', 'qmp_socket': '/run/s1.qmp',
            'path': '/img/d1-op.qcow2'}
        assert s.get(models.Disk, 'd2').locator == {
            'driver': 'qemu', 'qmp_socket': None, 'path': '/img/b.qcow2'}
        assert s.get(models.Snapshot, 'x1').locator == {
            'driver': 'qemu', 'path': '/img/a.qcow2'}
        assert s.get(models.Snapshot, 'x2').locator is None
        # the old columns follow the locator
        disk = s.get(models.Disk, 'd1')
        disk.locator = dict(disk.locator, path='/img/new.qcow2')
        assert disk.active_image == '/img/new.qcow2'
