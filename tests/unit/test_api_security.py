"""Tenant isolation on every endpoint, hostile input, rate limit, the
OpenAPI document.  Two projects (p1, p2) and an admin, conductor and agent
in-process, on SQLite and on PostgreSQL."""

import datetime
import json
import os
import uuid

import pytest

from agent import images
from conductor.api import app as api_app
from conductor.api import controllers
from conductor.api import openapi
from conductor.api import schemas
from conductor.db import api as db
from conductor.db import models
from livesnap_tools import fixtures
from tests.functional import scenarios

_err = fixtures.api_error


@pytest.fixture
def world(inprocess):
    """srv1 of p1 with one snapshot, srv2 of p2; both offline."""
    dep = inprocess
    for server, project in (('srv1', 'p1'), ('srv2', 'p2')):
        base = os.path.join(dep.image_dir, '%s-vda.qcow2' % server)
        images.create_base(base, 4 * scenarios.MiB)
        dep.register_server(server, base, project=project)
    snap_id, op = scenarios.create_snapshot(dep, 'srv1', 'mine')
    assert op['status'] == 'succeeded', op
    return dep, snap_id, op['id']


def _state():
    """Every row the API could change (hosts aside: heartbeats)."""
    out = {}
    with db.transaction() as s:
        for model in (models.Server, models.Disk, models.Snapshot,
                      models.Operation):
            rows = s.query(model).all()
            out[model.__tablename__] = sorted(
                repr(sorted((c.name, repr(getattr(r, c.name)))
                            for c in model.__table__.columns))
                for r in rows)
    return out


# ----------------------------------------------------------- isolation

def test_every_endpoint_hides_another_projects_objects(world):
    dep, snap_id, op_id = world
    before = _state()
    for method, path, body in [
            ('GET', '/v1/servers/srv1', None),
            ('GET', '/v1/servers/srv1/snapshots', None),
            ('GET', '/v1/servers/srv1/snapshots?include_deleted=true', None),
            ('POST', '/v1/servers/srv1/snapshots',
             {'snapshot': {'name': 'x', 'disk': 'vda'}}),
            ('GET', '/v1/snapshots/%s' % snap_id, None),
            ('DELETE', '/v1/snapshots/%s' % snap_id, None),
            ('POST', '/v1/snapshots/%s/revert' % snap_id, None),
            ('GET', '/v1/operations/%s' % op_id, None)]:
        assert _err(dep, method, path, body, token='p2-token') == (
            404, 'not_found'), (method, path)
    # Lists show p2 only its own.
    assert [s['id'] for s in dep.ok('GET', '/v1/servers',
                                    token='p2-token')['servers']] == ['srv2']
    assert dep.ok('GET', '/v1/operations', token='p2-token') == {
        'operations': []}
    assert dep.ok('GET', '/v1/operations?server_id=srv1',
                  token='p2-token') == {'operations': []}
    assert _state() == before


def test_a_foreign_object_and_a_missing_one_answer_alike(world):
    dep, snap_id, op_id = world
    for path in ('/v1/snapshots/%s', '/v1/operations/%s'):
        foreign = dep.api('GET', path % (snap_id if 'snap' in path
                                         else op_id), token='p2-token')
        missing = dep.api('GET', path % uuid.uuid4(), token='p2-token')
        assert foreign[0] == missing[0] == 404
        assert foreign[1]['error']['code'] == missing[1]['error']['code']


def test_owner_acts_on_its_own(world):
    dep, snap_id, op_id = world
    assert dep.ok('GET', '/v1/servers/srv1')['server']['project_id'] == 'p1'
    assert [s['id'] for s in dep.ok('GET', '/v1/servers')['servers']] == [
        'srv1']
    assert dep.ok('GET', '/v1/snapshots/%s' % snap_id)['snapshot'][
        'status'] == 'available'
    assert dep.ok('GET', '/v1/operations/%s' % op_id)['operation'][
        'status'] == 'succeeded'
    op = dep.ok('POST', '/v1/snapshots/%s/revert' % snap_id, {},
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id,
                status=202)['operation']
    assert dep.wait_operation(op['id'])['status'] == 'succeeded'


def test_admin_sees_and_acts_on_every_project(world):
    dep, snap_id, op_id = world
    admin = 'admin-token'
    assert [s['id'] for s in dep.ok('GET', '/v1/servers',
                                    token=admin)['servers']] == [
        'srv1', 'srv2']
    assert dep.ok('GET', '/v1/servers/srv2', token=admin)['server'][
        'project_id'] == 'p2'
    assert dep.ok('GET', '/v1/operations/%s' % op_id, token=admin)
    snap2, op = scenarios.create_snapshot(dep, 'srv2', 'by-admin',
                                          token=admin)
    assert op['status'] == 'succeeded'
    # The admin's snapshot belongs to the server's project.
    assert dep.ok('GET', '/v1/snapshots/%s' % snap2,
                  token='p2-token')['snapshot']['name'] == 'by-admin'
    op = dep.ok('DELETE', '/v1/snapshots/%s' % snap_id, token=admin,
                status=202)['operation']
    assert dep.wait_operation(op['id'], token=admin)['status'] == \
        'succeeded'


def test_only_admin_registers_servers(world):
    dep, _, _ = world
    body = {'server': {'id': 'srv9', 'name': 'x', 'project_id': 'p1',
                       'host': 'hv1', 'disks': [{
                           'name': 'vda',
                           'path': os.path.join(dep.image_dir, 'x.qcow2')}]}}
    before = _state()
    for token in ('p1-token', 'p2-token'):
        assert _err(dep, 'POST', '/v1/servers', body, token=token) == (
            403, 'forbidden')
    assert _state() == before


# ------------------------------------------------------ authentication

FORGED = [
    {},
    {'X-Auth-Token': ''},
    {'X-Auth-Token': 'p1-token-but-longer'},
    # Identity headers a client forges are never believed in tokens mode.
    {'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'p1',
     'X-Roles': 'admin'},
]


def test_no_credentials_no_action(world):
    import urllib.error
    import urllib.request
    dep, snap_id, _ = world
    before = _state()
    for headers, (method, path) in [
            (h, r) for h in FORGED
            for r in (('GET', '/v1/servers'),
                      ('DELETE', '/v1/snapshots/%s' % snap_id))]:
        req = urllib.request.Request(dep.base_url + path, method=method,
                                     headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
        assert json.loads(err.value.read())['error']['code'] == \
            'unauthorized'
    assert _state() == before


# ---------------------------------------------------------- validation

QUERIES = [
    '/v1/servers/srv1/snapshots?include_deleted=maybe',
    '/v1/servers/srv1/snapshots?include_deleted=true&include_deleted=no',
    '/v1/servers/srv1/snapshots?sort=name',
    '/v1/operations?server_id=a%20b',
    '/v1/operations?server_id=' + 'x' * 65,
    '/v1/operations?server_id=srv1%0A',
    '/v1/operations?limit=five',      # limit is a page size (an integer)
    '/v1/operations?page=2',
    '/v1/servers?all_tenants=1',
    '/v1/servers/srv1/snapshots?include_deleted=%ff',
]


def test_query_strings_are_validated(world):
    dep, _, _ = world
    for path in QUERIES:
        assert _err(dep, 'GET', path) == (400, 'bad_request'), path


def test_valid_query_strings(world):
    dep, _, op_id = world
    assert len(dep.ok('GET', '/v1/servers/srv1/snapshots'
                      '?include_deleted=false')['snapshots']) == 1
    assert [o['id'] for o in dep.ok(
        'GET', '/v1/operations?server_id=srv1')['operations']] == [op_id]


IDS = [
    '/v1/servers/srv1%0A', '/v1/servers/a%20b', '/v1/servers/%00',
    '/v1/servers/' + 'x' * 65, '/v1/snapshots/%E2%98%83',
    '/v1/operations/..%2F..%2Fetc', '/v1/servers/%ff%fe/snapshots']


def test_impossible_ids_are_not_found(world):
    dep, _, _ = world
    for path in IDS:
        assert _err(dep, 'GET', path) == (404, 'not_found'), path


BODIES = [
    b'[' * 30000 + b']' * 30000,              # nested too deeply
    b'{"snapshot": {"name": "\\ud800", "disk": "vda"}}',   # lone surrogate
    b'{"snapshot": {"name": "a\\u0000b", "disk": "vda"}}',
    b'{"snapshot": {"name": "line\\n", "disk": "vda"}}',
    b'{"snapshot": {"name": "ok", "disk": "vda\\n"}}',
    b'{"snapshot": {"name": "ok", "disk": "vda"}, "snapshot": 1}',
    b'NaN', b'{"snapshot": {"name": "ok", "disk": "vda"}} trailing',
]


def test_hostile_bodies(world):
    dep, _, _ = world
    before = _state()
    for raw in BODIES:
        assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                    raw=raw) == (400, 'bad_request'), raw[:60]
    assert _state() == before


def test_actions_without_a_body_refuse_one(world):
    dep, snap_id, _ = world
    before = _state()
    assert _err(dep, 'POST', '/v1/snapshots/%s/revert' % snap_id,
                {'force': True}) == (400, 'bad_request')
    assert _err(dep, 'DELETE', '/v1/snapshots/%s' % snap_id,
                raw=b'not json') == (400, 'bad_request')
    assert _err(dep, 'GET', '/v1/servers', raw=b'x' * 70000) == (
        413, 'request_too_large')
    assert _state() == before


SERVER_SPECS = [
    {'disks': [{'name': 'vd%d' % i, 'path': '/i/%d' % i}
               for i in range(17)]},
    {'disks': []},
    {'name': 'x' * 256},
    {'id': '../srv'},
    {'project_id': ''},
    {'host': 'hv1; rm -rf /'},
    {'qmp_socket': 'relative.sock'},
    {'disks': [{'name': 'vda', 'path': 'relative'}]},
    {'disks': [{'name': 'vda', 'path': '/i/a', 'format': 'raw'}]},
    {'disks': [{'name': 'vda', 'path': '/i/a'}, {'name': 'vda',
                                                  'path': '/i/b'}]},
]


def test_server_bodies_are_bounded(world):
    dep, _, _ = world
    before = _state()
    for spec in SERVER_SPECS:
        server = {'id': 'srv9', 'name': 'n', 'project_id': 'p1',
                  'host': 'hv1',
                  'disks': [{'name': 'vda', 'path': os.path.join(
                      dep.image_dir, 'a.qcow2')}]}
        server.update(spec)
        assert _err(dep, 'POST', '/v1/servers', {'server': server},
                    token='admin-token') == (400, 'bad_request'), spec
    assert _state() == before


def test_unexpected_errors_hide_the_trace(world, monkeypatch):
    dep, _, _ = world

    def boom(*args, **kwargs):
        raise RuntimeError('secret detail at /etc/livesnap/secret.conf')

    monkeypatch.setattr(controllers.Servers, 'index', boom)
    status, payload = dep.api('GET', '/v1/servers')
    assert status == 500
    assert payload['error']['code'] == 'internal_error'
    text = json.dumps(payload)
    for leak in ('Traceback', 'secret', 'RuntimeError', '.py', 'line '):
        assert leak not in text
    assert 'req-' in payload['error']['message']


# ----------------------------------------------------------- rate limit

def test_rate_limit_per_project(world, conf):
    dep, snap_id, _ = world
    conf.set('operations_per_minute', 2, group='api')
    # world made one operation of p1 already.
    snap2, op = scenarios.create_snapshot(dep, 'srv1', 'two')
    before = _state()
    status, payload = dep.api('POST', '/v1/servers/srv1/snapshots',
                              {'snapshot': {'name': 'three', 'disk': 'vda'}})
    assert status == 429, payload
    assert payload['error']['code'] == 'rate_limited'
    assert _err(dep, 'DELETE', '/v1/snapshots/%s' % snap2) == (
        429, 'rate_limited')
    assert _err(dep, 'POST', '/v1/snapshots/%s/revert' % snap2) == (
        429, 'rate_limited')
    assert _state() == before
    # Another project is not limited by p1's operations, and it still
    # cannot tell p1's objects exist (404, not 429).
    assert _err(dep, 'DELETE', '/v1/snapshots/%s' % snap2,
                token='p2-token') == (404, 'not_found')
    scenarios.create_snapshot(dep, 'srv2', 'p2s', token='p2-token')
    # Reads are not limited; the admin is exempt by policy.
    dep.ok('GET', '/v1/servers/srv1/snapshots')
    scenarios.create_snapshot(dep, 'srv1', 'admin', token='admin-token')


def test_rate_limit_answers_retry_after(world, conf):
    import urllib.error
    import urllib.request
    dep, _, _ = world
    conf.set('operations_per_minute', 1, group='api')
    req = urllib.request.Request(
        dep.base_url + '/v1/servers/srv1/snapshots', method='POST',
        data=json.dumps({'snapshot': {'name': 'x', 'disk': 'vda'}}).encode(),
        headers={'X-Auth-Token': 'p1-token',
                 'Content-Type': 'application/json'})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 429
    assert 1 <= int(err.value.headers['Retry-After']) <= 60


def test_rate_limit_counts_every_conductors_operations(world, conf):
    """The count comes from the shared table: operations recorded by
    another conductor count, and ones older than a minute do not.
    """
    dep, snap_id, _ = world
    conf.set('operations_per_minute', 3, group='api')
    now = models.utcnow()
    with db.transaction() as s:
        server = db.server_get(s, 'srv1')
        for i, age in enumerate((5, 120, 3600)):
            s.add(models.Operation(
                id=str(uuid.uuid4()), project_id='p1', server_id='srv1',
                disk_id=server.disks[0].id, host='hv1', action='create',
                status='succeeded', conductor='other-conductor',
                created_at=now - datetime.timedelta(seconds=age)))
        # The conductor's own deferred deletions are not the tenant's.
        s.add(models.Operation(
            id=str(uuid.uuid4()), project_id='p1', server_id='srv1',
            disk_id=server.disks[0].id, host='hv1', action='delete',
            status='succeeded', requested_by='conductor', created_at=now))
    # 1 from world + 1 from "another conductor" = 2 < 3.
    scenarios.create_snapshot(dep, 'srv1', 'third')
    assert _err(dep, 'POST', '/v1/servers/srv1/snapshots',
                {'snapshot': {'name': 'x', 'disk': 'vda'}}) == (
        429, 'rate_limited')
    conf.set('operations_per_minute', 0, group='api')
    scenarios.create_snapshot(dep, 'srv1', 'unlimited')


# ------------------------------------------------------------- OpenAPI

def test_openapi_served_without_credentials(inprocess):
    status, doc = inprocess.api('GET', '/v1/openapi.json', token=None)
    assert status == 200
    assert doc == openapi.document()
    assert doc['openapi'].startswith('3.')


def test_openapi_paths_equal_routes():
    documented = {(method.upper(), path)
                  for path, item in openapi.document()['paths'].items()
                  for method in item
                  if method in ('get', 'post', 'put', 'patch', 'delete')}
    routed = {(method, path) for method, path, _, _ in api_app.ROUTES}
    assert documented == routed


def test_openapi_schemas_are_the_validated_ones():
    doc = openapi.document()
    comp = doc['components']['schemas']
    assert comp['ServerCreate'] == schemas.server_create
    assert comp['SnapshotCreate'] == schemas.snapshot_create
    assert comp['Empty'] == schemas.empty_or_null
    assert comp['Id'] == schemas.path_id
    assert comp['PolicyCreate'] == schemas.policy_create
    assert comp['PolicyUpdate'] == schemas.policy_update
    assert comp['SnapshotUpdate'] == schemas.snapshot_update
    assert comp['SnapshotClone'] == schemas.snapshot_clone
    bodies = {}
    queries = {}
    for path, item in doc['paths'].items():
        for method, op in item.items():
            if method == 'parameters':
                continue
            key = (method.upper(), path)
            ref = op.get('requestBody', {}).get('content', {}).get(
                'application/json', {}).get('schema', {}).get('$ref')
            bodies[key] = ref and ref.rsplit('/', 1)[-1]
            queries[key] = {p['name']: p['schema']['$ref'].rsplit('/', 1)[-1]
                            for p in op.get('parameters', [])
                            if p.get('in') == 'query'}
    names = {id(v): k for k, v in comp.items()}
    for method, path, controller, action in api_app.ROUTES:
        body = api_app.BODY_SCHEMAS.get((controller, action))
        expected = {'ServerCreate': schemas.server_create,
                    'SnapshotCreate': schemas.snapshot_create,
                    'PolicyCreate': schemas.policy_create,
                    'PolicyUpdate': schemas.policy_update,
                    'SnapshotUpdate': schemas.snapshot_update,
                    'SnapshotGroupCreate': schemas.snapshot_group_create,
                    'SnapshotClone': schemas.snapshot_clone,
                    'Empty': None}.get(bodies[(method, path)])
        assert body == expected, (method, path)
        query = api_app.QUERY_SCHEMAS.get((controller, action),
                                          schemas.no_query)
        assert set(query.get('properties', {})) == set(
            queries[(method, path)]), (method, path)
        for name, ref in queries[(method, path)].items():
            assert comp[ref] == query['properties'][name]
    assert names  # the document has schemas at all


def test_openapi_document_is_valid():
    """Checked with schemathesis' own loader (it validates the document)."""
    schemathesis = pytest.importorskip('schemathesis')
    schema = schemathesis.openapi.from_dict(openapi.document())
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == len(api_app.ROUTES)
