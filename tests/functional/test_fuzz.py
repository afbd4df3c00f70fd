"""Fuzz the REST API of a running conductor from its OpenAPI document.

schemathesis reads ``GET /v1/openapi.json`` from an in-process deployment
(conductor, API over HTTP, agent with real qemu-img) and generates valid
and invalid requests for every operation, as a project member, another
project, the admin or nobody (schemathesis' negative cases also drop the
token), often aimed at real objects.  Every answer
must be a documented, well-formed JSON answer and never a 5xx; a refused
request (4xx) must leave the database exactly as it was.

``LIVESNAP_FUZZ_EXAMPLES`` sets the examples per operation and mode
(default 15, about 30 s on SQLite); PostgreSQL and MariaDB run the first
half of the same derandomized cases (the suite's time budget), so every
case is run on SQLite and half of them on all three.  The number of cases
run is printed.  Run it alone with::

    .venv/bin/python -m pytest -p no:cacheprovider -s \\
        tests/functional/test_fuzz.py
"""

import os
import time

import pytest
import sqlalchemy as sa

from agent import images
from conductor.db import api as db
from conductor.db import models
from tests.functional import scenarios

schemathesis = pytest.importorskip('schemathesis')

from hypothesis import given  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import Phase  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.specs.openapi import checks as oas_checks  # noqa: E402

EXAMPLES = int(os.environ.get('LIVESNAP_FUZZ_EXAMPLES', '15'))
TOKENS = ['p1-token'] * 4 + ['admin-token'] * 3 + ['p2-token'] * 2 + [None]
CHECKS = [st_checks.not_a_server_error,
          oas_checks.status_code_conformance,
          oas_checks.content_type_conformance,
          oas_checks.response_schema_conformance]


def _state():
    """Every row a request could change (hosts aside: heartbeats)."""
    out = {}
    with db.transaction() as s:
        for model in (models.Server, models.Disk, models.Snapshot,
                      models.Operation, models.SnapshotPolicy):
            out[model.__tablename__] = sorted(
                repr(sorted((c.name, repr(getattr(r, c.name)))
                            for c in model.__table__.columns))
                for r in s.scalars(sa.select(model)))
    return out


def _settle(timeout=30):
    """Wait until no operation is pending or running and no disk locked,
    so the state only changes by the next request.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.transaction() as s:
            busy = s.scalar(
                sa.select(sa.func.count()).select_from(models.Operation)
                .where(models.Operation.status.in_(('pending', 'running'))))
            locked = s.scalar(
                sa.select(sa.func.count()).select_from(models.Disk)
                .where(models.Disk.operation_id.isnot(None)))
        if not busy and not locked:
            return
        time.sleep(0.02)
    raise AssertionError('operations still running after %ss' % timeout)


def _known_ids(dep):
    ids = {'server_id': ['srv1', 'srv2'], 'snapshot_id': [],
           'operation_id': [], 'policy_id': []}
    with db.transaction() as s:
        ids['snapshot_id'] = list(s.scalars(sa.select(models.Snapshot.id)))
        ids['operation_id'] = list(s.scalars(sa.select(models.Operation.id)))
        ids['policy_id'] = list(s.scalars(
            sa.select(models.SnapshotPolicy.id)))
    return ids


def test_fuzz_api(inprocess, capsys):
    dep = inprocess
    for server, project in (('srv1', 'p1'), ('srv2', 'p2')):
        base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server)
        images.create_base(base, 4 * scenarios.MiB)
        dep.register_server(server, base, project=project)
    scenarios.create_snapshot(dep, 'srv1', 'first')
    scenarios.create_snapshot(dep, 'srv1', 'second')
    for server, token in (('srv1', 'p1-token'), ('srv2', 'p2-token')):
        dep.ok('POST', '/v1/policies', {'policy': {
            'name': 'hourly', 'server_id': server, 'interval': 3600,
            'retention': {'keep_last': 3}}}, token=token, status=201)

    schema = schemathesis.openapi.from_url(dep.base_url + '/v1/openapi.json')
    counts = {'cases': 0, 'refused': 0, 'accepted': 0}
    statuses = {}

    def run(case, data):
        for name in sorted(case.path_parameters or {}):
            # Draw the same way whatever the database holds (hypothesis
            # replays draws), then aim at a real object.
            aim = data.draw(st.booleans(), label='aim at ' + name)
            pick = data.draw(st.integers(0, 1000), label=name)
            known = _known_ids(dep).get(name)
            if aim and known:
                case.path_parameters[name] = known[pick % len(known)]
        aim_disk = data.draw(st.booleans(), label='aim at vda')
        body = getattr(case, 'body', None)
        if aim_disk and isinstance(body, dict) and isinstance(
                body.get('snapshot'), dict):
            body['snapshot']['disk'] = 'vda'
        token = data.draw(st.sampled_from(TOKENS), label='token')
        headers = {'X-Auth-Token': token} if token else {}
        before = _state()
        response = case.call(base_url=dep.base_url, headers=headers,
                             timeout=30)
        counts['cases'] += 1
        statuses[response.status_code] = statuses.get(
            response.status_code, 0) + 1
        assert response.status_code < 500, (
            case.method, case.formatted_path, response.text[:500])
        case.validate_response(response, checks=CHECKS, headers=headers)
        payload = response.json()
        if response.status_code >= 400:
            counts['refused'] += 1
            assert set(payload) == {'error'}, payload
            assert 'Traceback' not in response.text
            assert _state() == before, (
                'refused %s %s changed the database'
                % (case.method, case.formatted_path))
        else:
            counts['accepted'] += 1
            _settle()

    examples = EXAMPLES if db.CONF.database.connection.startswith(
        'sqlite') else max(1, EXAMPLES // 2)
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            test = settings(
                max_examples=examples, deadline=None, database=None,
                derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))(
                given(case=strategy, data=st.data())(run))
            test()
    elapsed = time.monotonic() - started
    with capsys.disabled():
        print('\nfuzz: %(cases)d cases (%(accepted)d accepted, '
              '%(refused)d refused)' % counts,
              'in %.1f s; statuses %s' % (elapsed, dict(sorted(
                  statuses.items()))))
    assert counts['cases'] >= len(list(schema.get_all_operations()))
    assert counts['accepted'] and counts['refused']
