"""A short chaos run (``tools/chaos`` at a small size) inside the suite.

Two agents, four VMs, two conductors, a private RabbitMQ node and a private
PostgreSQL cluster, about 45 s of tenants' load while the cheaper faults
are injected at random (agents and conductors killed, a QEMU killed in the
middle of a merge, the image directory full, a stalled QEMU, a task sent
twice, a task lost, a database restart).  Asserts the invariants the run
checks, never its timings.  A second run does the same on libvirt domains
(``--driver libvirt``, libvirtd killed too), skipped without libvirt.

The two bugs being fixed on other branches (an operation set back to
``running`` after its report, dispatch.send; reports not redelivered
after a conductor crash) show as operations stuck ``pending``/``running``
and disks locked; when those are the only failures, the test is marked
xfail with the run's own words, so the suite stays green until they are
merged.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from livesnap_tools.chaos import services

pytestmark = pytest.mark.functional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

KINDS = ('kill_agent,kill_conductor,kill_qemu_mid_merge,image_dir_full,'
         'slow_disk,duplicate_task,lose_task,restart_postgresql')

#: invariants a known, being-fixed bug can break (see the docstring): a
#: lost report leaves the operation running, its disk locked and, for a
#: merge done on disk, the records behind the files (audit: missing)
KNOWN = {'no operation pending/running', 'every disk free',
         'audit finds no drift',
         'the records name the image each VM writes to'}
KNOWN_WORDS = ('lost update', 'not redelivered')


@pytest.mark.skipif(shutil.which('rabbitmq-server') is None,
                    reason='rabbitmq-server missing')
@pytest.mark.skipif(not os.path.exists(os.path.join(services.PG_BIN,
                                                    'initdb')),
                    reason='PostgreSQL 15 binaries missing')
def test_short_chaos_run():
    proc = subprocess.run(
        [sys.executable, '-m', 'livesnap_tools.chaos', '--agents', '2',
         '--vms', '4', '--tenants', '2', '--conductors', '2',
         '--duration', '45',
         '--kinds', KINDS, '--gap-min', '1', '--gap-max', '3',
         '--settle', '120', '--seed', '9', '--json'],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    print(proc.stderr[-3000:])
    assert sum(res['faults'].values()) >= 5, res['faults']
    assert not res['fault_errors'], res['fault_errors']
    failed = {name: details for name, ok, details in res['checks']
              if not ok}
    stuck = failed.get('no operation pending/running')
    if stuck and set(failed) <= KNOWN and all(
            any(w in d for w in KNOWN_WORDS) for d in stuck):
        pytest.xfail('known bug being fixed elsewhere: %s'
                     % stuck[:3])
    assert not failed, json.dumps(failed, indent=1)
    assert proc.returncode == 0, proc.stderr[-2000:]


LIBVIRT_KINDS = ('kill_agent,kill_conductor,lose_task,duplicate_task,'
                 'restart_libvirtd,slow_disk')


@pytest.mark.skipif(shutil.which('rabbitmq-server') is None,
                    reason='rabbitmq-server missing')
@pytest.mark.skipif(not os.path.exists(os.path.join(services.PG_BIN,
                                                    'initdb')),
                    reason='PostgreSQL 15 binaries missing')
def test_short_libvirt_chaos_run():
    """The same on libvirt domains (``--driver libvirt``), libvirtd
    killed and started again among the faults (skipped by the run while
    another user's process is connected to it), tasks lost and sent
    twice.
    """
    from livesnap_tools import libvirtd
    why = libvirtd.why_unavailable()
    if why:
        pytest.skip(why)
    proc = subprocess.run(
        [sys.executable, '-m', 'livesnap_tools.chaos', '--driver',
         'libvirt', '--agents', '2', '--vms', '2', '--tenants', '2',
         '--conductors', '2', '--duration', '40', '--kinds', LIBVIRT_KINDS,
         '--gap-min', '0.8', '--gap-max', '2', '--settle', '90',
         '--seed', '11', '--json'],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    print(proc.stderr[-3000:])
    assert sum(res['faults'].values()) >= 5, res['faults']
    assert not res['fault_errors'], res['fault_errors']
    failed = {name: details for name, ok, details in res['checks']
              if not ok}
    assert not failed, json.dumps(failed, indent=1)
    assert proc.returncode == 0, proc.stderr[-2000:]
