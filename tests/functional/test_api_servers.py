"""The HTTP servers of the REST API: the embedded one (waitress) under
200 clients at once, and ``conductor.wsgi:application`` under gunicorn
beside a ``livesnap-conductor`` that serves no API."""

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from agent import images
from livesnap_tools import fixtures
from tests.functional import scenarios

pytestmark = pytest.mark.functional

CLIENTS = 200


def _get(url, token='p1-token'):
    req = urllib.request.Request(url, headers={'X-Auth-Token': token})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_200_clients_at_once_all_get_answers(inprocess):
    """Every client connects at the same moment (a barrier), sends a few
    requests, each on a new connection: none is reset, none gets a 5xx.
    """
    base = os.path.join(inprocess.image_dir, 'c.qcow2')
    images.create_base(base, scenarios.MiB)
    inprocess.register_server('srv', base)
    paths = ['/v1/servers/srv', '/v1/servers/srv/snapshots',
             '/v1/operations']
    start = threading.Barrier(CLIENTS)
    results, failures = [], []

    def client():
        try:
            start.wait()
            for path in paths:
                results.append(_get(inprocess.base_url + path))
        except Exception as exc:  # a reset, a timeout: all count
            failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert results == [200] * (CLIENTS * len(paths))


def _wait_port(dep, name, port, timeout=60):
    deadline = time.monotonic() + timeout
    while not fixtures._port_open('127.0.0.1', port):
        if dep.procs[name].poll() is not None:
            raise RuntimeError('%s exited: %s' % (name, dep.log(name)))
        if time.monotonic() > deadline:
            raise RuntimeError('%s did not listen: %s'
                               % (name, dep.log(name)))
        time.sleep(0.1)


def test_gunicorn_serves_the_api_beside_a_conductor_without_it(
        tmp_path, rabbit_url, postgres_url):
    """gunicorn (2 workers) serves the API; a livesnap-conductor with
    ``[api] enabled = false`` migrates the schema and takes the agent's
    reports; a snapshot made through gunicorn finishes.
    """
    fixtures.pg_reset_schema(postgres_url)
    dep = fixtures.ProcessDeployment(tmp_path, rabbit_url, postgres_url)
    dep.start = lambda: None  # started here, differently
    with fixtures.running(dep):
        dep._spawn('conductor', 'conductor.service',
                   '[api]\nenabled = false\n')
        dep.start_agent()  # its heartbeat lands once the schema exists
        assert not fixtures._port_open('127.0.0.1', dep.port)
        log = open(tmp_path / 'gunicorn.log', 'a')
        env = dict(os.environ,
                   OS_LIVESNAP_CONFIG_FILES=str(dep.config_file))
        dep.procs['gunicorn'] = subprocess.Popen(
            [sys.executable, '-m', 'gunicorn', '--workers', '2',
             '--threads', '4', '--bind', '127.0.0.1:%d' % dep.port,
             'conductor.wsgi:application'],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        _wait_port(dep, 'gunicorn', dep.port)
        status, doc = dep.api('GET', '/v1/openapi.json', token=None)
        assert status == 200 and doc['openapi'].startswith('3.1')
        assert fixtures.api_error(dep, 'GET', '/v1/servers',
                                  token='bad') == (401, 'unauthorized')
        base = os.path.join(dep.image_dir, 'g.qcow2')
        images.create_base(base, scenarios.MiB)
        dep.register_server('srv', base)
        body = dep.ok('POST', '/v1/servers/srv/snapshots',
                      {'snapshot': {'name': 's1', 'disk': 'vda'}},
                      status=202)
        op = dep.wait_operation(body['operation']['id'])
        assert op['status'] == 'succeeded', op
        snaps = dep.ok('GET', '/v1/servers/srv/snapshots')['snapshots']
        assert [s['name'] for s in snaps] == ['s1']
        assert snaps[0]['current'] is True
