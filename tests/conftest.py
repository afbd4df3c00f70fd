"""Shared fixtures: configuration, databases (SQLite and the real
PostgreSQL and MariaDB), and in-process or multi-process deployments."""

import logging
import os
import uuid

import pytest

from livesnap_tools import fixtures


def pytest_report_header(config):
    return ['livesnap: PostgreSQL %s, MariaDB %s, RabbitMQ %s' % (
        'available' if fixtures.postgres_available() else 'NOT available',
        'available' if fixtures.mariadb_available() else 'NOT available',
        'available' if fixtures.rabbit_available() else 'NOT available')]


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Leave the root logger as each test found it: a command run in
    process (``livesnap-manage``, oslo.log's set-up) adds handlers bound to
    the test's captured streams, which later tests would write to closed.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.fixture
def conf():
    """Override oslo.config options for one test; undone afterwards."""
    overrides = fixtures.ConfFixture()
    yield overrides
    overrides.cleanup()


@pytest.fixture(scope='session')
def postgres_url():
    """A fresh PostgreSQL database for this test session (dropped after)."""
    if not fixtures.postgres_available():
        if os.environ.get('LIVESNAP_REQUIRE_SERVICES'):
            pytest.fail('PostgreSQL at 127.0.0.1:5432 is required')
        pytest.skip('PostgreSQL at 127.0.0.1:5432 is not reachable')
    name = 'livesnap_test_%s' % uuid.uuid4().hex[:12]
    fixtures.pg_admin('CREATE DATABASE %s' % name)
    yield 'postgresql+psycopg2://postgres@127.0.0.1:5432/%s' % name
    fixtures.pg_admin('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)


@pytest.fixture(scope='session')
def mariadb_url():
    """A fresh MariaDB database for this test session (dropped after)."""
    if not fixtures.mariadb_available():
        if os.environ.get('LIVESNAP_REQUIRE_SERVICES'):
            pytest.fail('MariaDB at 127.0.0.1:3306 is required')
        pytest.skip('MariaDB at 127.0.0.1:3306 is not reachable')
    name = 'livesnap_test_%s' % uuid.uuid4().hex[:12]
    fixtures.mysql_admin('CREATE DATABASE %s' % name)
    yield 'mysql+pymysql://root@127.0.0.1:3306/%s?charset=utf8mb4' % name
    fixtures.mysql_admin('DROP DATABASE IF EXISTS %s' % name)


@pytest.fixture(params=['sqlite', 'postgresql', 'mariadb'])
def database(request, conf, tmp_path):
    """The conductor's database, migrated to head, on each backend."""
    if request.param == 'sqlite':
        url = 'sqlite:///%s' % (tmp_path / 'livesnap.sqlite')
    elif request.param == 'mariadb':
        url = request.getfixturevalue('mariadb_url')
        fixtures.mysql_reset_schema(url)
    else:
        url = request.getfixturevalue('postgres_url')
        fixtures.pg_reset_schema(url)
    from conductor.db import api as db
    conf.set('connection', url, group='database')
    db.reset()
    db.sync()
    yield url
    db.reset()


@pytest.fixture
def rabbit_url():
    """The real RabbitMQ, on a vhost of this test's own.

    oslo.messaging names its queues after the topics (``livesnap-agent.hv1``,
    ``livesnap-conductor``) whatever the exchange, so two deployments on one
    vhost would consume each other's messages; a vhost isolates them.
    """
    if not fixtures.rabbit_available():
        if os.environ.get('LIVESNAP_REQUIRE_SERVICES'):
            pytest.fail('RabbitMQ at 127.0.0.1:5672 is required')
        pytest.skip('RabbitMQ at 127.0.0.1:5672 is not reachable')
    vhost = fixtures.rabbit_add_vhost()
    yield fixtures.RABBIT_URL + vhost
    fixtures.rabbit_delete_vhost(vhost)


@pytest.fixture(scope='session')
def libvirt_up():
    """libvirtd answering at qemu:///system for the libvirt tests:
    started for this run if it does not run yet (root only) and stopped at
    the end of the run if it was started here; skipped without libvirt.
    """
    from livesnap_tools import libvirtd
    reason = libvirtd.why_unavailable()
    if reason:
        pytest.skip(reason)
    libvirtd.ensure_running()
    yield
    libvirtd.stop()


@pytest.fixture
def inprocess(conf, tmp_path, database):
    """Conductor, API and one agent in this process over kombu+memory."""
    dep = fixtures.InProcessDeployment(conf, tmp_path)
    dep.start()
    yield dep
    dep.stop()


def pytest_terminal_summary(terminalreporter):
    """Print the fault-injection figures (docs/faults.md, README)."""
    import sys
    faults = sys.modules.get('tests.functional.test_faults')
    if faults is not None and faults.STATS['faults']:
        terminalreporter.write_line(
            'fault injection: %d faults injected, longest VM pause seen '
            '%.3f s (from the fault to the VM running again)'
            % (faults.STATS['faults'], faults.STATS['longest_pause_s']))
        for what, took in sorted(faults.STATS.get('recovery_s', {}).items()):
            terminalreporter.write_line(
                'recovery: %s: every disk free %.1f s after the SIGKILL'
                % (what, took))
