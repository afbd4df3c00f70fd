"""livesnap.locators: the conductor's locator rules, by driver name."""

import pytest

from livesnap import locators

SERVER = {'id': 's1', 'name': 's1', 'project_id': 'p', 'host': 'h',
          'qmp_socket': '/run/s1.qmp', 'disks': []}
DISK = {'name': 'vda', 'path': '/i/vda.qcow2'}


def test_registration_by_paths_is_the_qemu_drivers():
    assert locators.server_columns(SERVER) == {'qmp_socket': '/run/s1.qmp'}
    assert locators.registered_disk(SERVER, DISK) == {
        'driver': 'qemu', 'qmp_socket': '/run/s1.qmp',
        'path': '/i/vda.qcow2'}
    with_qga = dict(SERVER, qga_socket='/run/s1.qga', driver='qemu')
    assert locators.registered_disk(with_qga, DISK)['qga_socket'] == \
        '/run/s1.qga'
    assert 'qga_socket' not in locators.registered_disk(
        dict(SERVER, qga_socket=None), DISK)


def test_other_drivers_are_not_registered_by_paths():
    assert locators.server_columns(dict(SERVER, driver='libvirt')) == {}
    with pytest.raises(ValueError):
        locators.registered_disk(dict(SERVER, driver='libvirt'), DISK)


def test_a_cloned_disk_by_the_images_driver():
    qemu = {'driver': 'qemu', 'qmp_socket': '/run/s1.qmp', 'path': '/i/a'}
    image = {'driver': 'qemu', 'path': '/i/c.qcow2'}
    assert locators.cloned_disk(image, [qemu]) == dict(
        image, qmp_socket='/run/s1.qmp')
    assert locators.cloned_disk(image, [dict(qemu, qmp_socket=None)]) == \
        dict(image, qmp_socket=None)
    fake = {'driver': 'fake', 'path': '/fake/c'}
    assert locators.cloned_disk(fake, []) == dict(fake, vm=None)
    libvirt = {'driver': 'libvirt', 'path': '/i/c.qcow2'}
    assert locators.cloned_disk(libvirt, []) == libvirt


def test_may_run():
    quiet = [{'driver': 'qemu', 'qmp_socket': None, 'path': '/i/a'}]
    live = [dict(quiet[0], qmp_socket='/run/s1.qmp')]
    assert not locators.may_run('qemu', quiet)
    assert locators.may_run('qemu', live)
    assert locators.may_run('libvirt', [{'driver': 'libvirt'}])
    assert locators.may_run('fake', [])


def test_guest_agent_and_file_kinds():
    assert locators.has_guest_agent({'driver': 'qemu', 'qga_socket': '/q'})
    assert not locators.has_guest_agent({'driver': 'qemu'})
    assert not locators.has_guest_agent(None)
    # libvirt: the agent reads the domain's channel when it freezes.
    assert locators.has_guest_agent({'driver': 'libvirt', 'domain': 'u'})
    assert locators.file_kind('/i/a.qcow2') == 'an image'
    assert locators.file_kind('/i/a.qcow2.deleted').startswith(
        'the file of a deleted image')
    assert locators.file_kind('/i/a.qcow2.tmp-3').startswith(
        'a temporary file')
    assert locators.file_kind('/i/notes.txt') == 'a file'


def test_libvirt_quiesce_defaults_to_preferred():
    """The conductor cannot see a domain's guest agent channel: a libvirt
    disk gets ``preferred`` and the agent's driver says why a snapshot
    stayed crash-consistent; a QEMU disk without ``qga_socket`` ``off``.
    """
    import types

    from conductor import creation
    lv = types.SimpleNamespace(locator={'driver': 'libvirt', 'domain': 'u',
                                        'target': 'vda', 'path': '/i/a'})
    qemu = types.SimpleNamespace(locator={'driver': 'qemu', 'path': '/i/a'})
    assert creation.quiesce_mode(None, lv) == 'preferred'
    assert creation.quiesce_mode(None, qemu) == 'off'
    assert creation.quiesce_mode('off', lv) == 'off'
