"""Hosts that cannot lie (issue 19): a rogue agent changes nothing.

A deployment over RabbitMQ and PostgreSQL with a key per host, required
by the conductor: the real agent on ``hv1`` signs its heartbeats (the
host comes up).  A second host, ``rogue``, gets a key of its own from
``livesnap-manage host key create``; its agent process then speaks for
``hv1``: heartbeats, a report failing ``hv1``'s running operation and its
progress, signed with its own key, forged under ``hv1``'s name, unsigned,
and signed truthfully as ``rogue`` about ``hv1``'s operation.  The
conductor refuses each one with a security event in its log; the
operation stays running and ``hv1``'s last heartbeat stays what its own
agent last sent.  Beside it, the same deployment takes a real online
snapshot: the agent's signed report is accepted.
"""

import datetime
import subprocess
import sys
import time
import uuid

import pytest
import sqlalchemy as sa

from livesnap_tools import fixtures
from tests.functional import scenarios

pytestmark = pytest.mark.functional

REFUSED = 'SECURITY host_auth_refused'


def test_signed_reports_and_heartbeats_run_a_snapshot(
        tmp_path, rabbit_url, postgres_url):
    """With keys required, the real agent's signed messages (a report
    with its steps and timings after their JSON trip) are all accepted.
    """
    fixtures.pg_reset_schema(postgres_url)
    with fixtures.running(fixtures.ProcessDeployment(
            tmp_path, rabbit_url, postgres_url, host_keys=True)) as dep:
        scenarios.online_create(dep, tmp_path)
        assert REFUSED not in (tmp_path / 'conductor.log').read_text()


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_signed_messages_in_process(conf, tmp_path, database, caplog):
    """``livesnap-all-in-one``'s shape (kombu+memory) with keys required."""
    dep = fixtures.InProcessDeployment(conf, tmp_path, host_keys=True)
    with fixtures.running(dep):
        scenarios.online_create(dep, tmp_path)
    assert REFUSED not in caplog.text


def _insert_running_operation(url, op_id):
    from conductor.db import models
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            far = datetime.datetime.utcnow() + datetime.timedelta(hours=1)
            c.execute(sa.insert(models.Operation).values(
                id=op_id, project_id='p1', server_id='s1', disk_id='d1',
                host=fixtures.HOST, action='create', status='running',
                requested_by='tenant', attempts=1, deadline=far,
                created_at=datetime.datetime.utcnow(),
                updated_at=datetime.datetime.utcnow()))
    finally:
        engine.dispose()


def _state(url, op_id):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            op = c.execute(sa.text(
                'SELECT status, progress, error FROM operations '
                'WHERE id = :i'), {'i': op_id}).one()
            host = c.execute(sa.text(
                'SELECT last_heartbeat, info FROM hosts WHERE name = :h'),
                {'h': fixtures.HOST}).one()
            return tuple(op), host[0], host[1]
    finally:
        engine.dispose()


def test_a_rogue_agent_speaking_for_another_host_changes_nothing(
        tmp_path, rabbit_url, postgres_url):
    fixtures.pg_reset_schema(postgres_url)
    dep = fixtures.ProcessDeployment(
        tmp_path, rabbit_url, postgres_url, host_keys=True,
        extra='[conductor]\ntask_receipt_timeout = 600\n')
    with fixtures.running(dep):
        # The operator makes the rogue host's key as for any host.
        rogue_key = tmp_path / 'rogue.key'
        subprocess.run(
            [sys.executable, '-m', 'conductor.manage', '--config-file',
             str(dep.config_file), 'host', 'key', 'create', 'rogue',
             '--output', str(rogue_key)], check=True, capture_output=True)
        assert (dep.host_keys_dir / 'rogue').exists()
        # hv1's agent signed its heartbeats: the host came up.
        op_id = str(uuid.uuid4())
        _insert_running_operation(postgres_url, op_id)
        dep.kill('agent')
        before = _state(postgres_url, op_id)
        assert before[0] == ('running', None, None)

        out = subprocess.run(
            [sys.executable, '-m', 'tests.functional.rogue_agent',
             '--config-file', str(dep.config_file), '--victim',
             fixtures.HOST, '--operation', op_id, '--key-file',
             str(rogue_key)], check=True, capture_output=True, text=True)
        sent = int(out.stdout.split()[-1])
        assert sent == 10

        log_file = tmp_path / 'conductor.log'
        deadline = time.monotonic() + 30
        while True:
            refused = [line for line in log_file.read_text().splitlines()
                       if REFUSED in line]
            if len(refused) >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        log = '\n'.join(refused)
        assert len(refused) == sent, dep.log('conductor')
        assert all(' ERROR ' in line for line in refused), log
        for reason in ('wrong_host', 'bad_signature', 'unsigned',
                       'not_its_operation'):
            assert reason in log
        assert _state(postgres_url, op_id) == before
