"""Hosts that cannot lie: agents' messages signed with a key per host,
verified by the conductor before it acts on them (issue 19)."""

import json
import logging
import os
import subprocess
import sys

import pytest

from conductor.db import api as db
from conductor.db import models
from conductor import hostauth
from conductor import manager
from conductor import rpcapi
from livesnap import hostkeys

KEY = bytes.fromhex(hostkeys.generate())
OTHER = bytes.fromhex(hostkeys.generate())
ARGS = {'operation_id': 'op-1', 'host': 'hv1',
        'report': {'status': 'succeeded', 'pause_ms': 1.25,
                   'steps': [{'name': 'pause', 'ms': 0.5}]}}


def _roundtrip(value):
    """What the conductor receives: the message after its JSON trip."""
    return json.loads(json.dumps(value))


# -- signing and verification -----------------------------------------------

def test_a_signature_verifies_after_the_trip_over_the_bus():
    auth = hostkeys.sign(KEY, 'hv1', 'report_operation', ARGS)
    assert hostkeys.verify([KEY], _roundtrip(auth), 'report_operation',
                           _roundtrip(ARGS), window=60) == 'hv1'


def test_a_wrong_key_is_refused():
    auth = hostkeys.sign(OTHER, 'hv1', 'report_operation', ARGS)
    with pytest.raises(hostkeys.BadSignature) as e:
        hostkeys.verify([KEY], auth, 'report_operation', ARGS, window=60)
    assert e.value.reason == 'bad_signature'


def test_another_hosts_name_in_the_signature_is_refused():
    auth = hostkeys.sign(KEY, 'hv1', 'heartbeat', {'host': 'hv1'})
    auth['host'] = 'hv2'
    with pytest.raises(hostkeys.BadSignature) as e:
        hostkeys.verify([KEY], auth, 'heartbeat', {'host': 'hv1'},
                        window=60)
    assert e.value.reason == 'bad_signature'


@pytest.mark.parametrize('change', ['status', 'operation', 'host', 'method'])
def test_a_tampered_message_is_refused(change):
    auth = hostkeys.sign(KEY, 'hv1', 'report_operation', ARGS)
    args, method = _roundtrip(ARGS), 'report_operation'
    if change == 'status':
        args['report']['status'] = 'failed'
    elif change == 'operation':
        args['operation_id'] = 'op-2'
    elif change == 'host':
        args['host'] = 'hv2'
    else:
        method = 'report_progress'
    with pytest.raises(hostkeys.BadSignature) as e:
        hostkeys.verify([KEY], auth, method, args, window=60)
    assert e.value.reason == 'bad_signature'


def test_a_message_older_or_newer_than_the_window_is_refused():
    old = hostkeys.sign(KEY, 'hv1', 'heartbeat', {}, now=1000.0)
    with pytest.raises(hostkeys.BadSignature) as e:
        hostkeys.verify([KEY], old, 'heartbeat', {}, window=60, now=1061.0)
    assert e.value.reason == 'expired'
    assert hostkeys.verify([KEY], old, 'heartbeat', {}, window=60,
                           now=1059.0) == 'hv1'
    with pytest.raises(hostkeys.BadSignature):
        hostkeys.verify([KEY], old, 'heartbeat', {}, window=60, now=900.0)


@pytest.mark.parametrize('auth', [None, 'x', {}, {'v': 1, 'host': 'hv1'},
                                  {'v': 2, 'host': 'hv1', 'ts': 1,
                                   'nonce': 'n', 'sig': 's'}])
def test_a_malformed_signature_is_refused(auth):
    with pytest.raises(hostkeys.BadSignature) as e:
        hostkeys.verify([KEY], auth, 'heartbeat', {}, window=60)
    assert e.value.reason == 'malformed'


def test_key_files_hold_several_keys_for_rotation(tmp_path):
    path = tmp_path / 'hv1'
    path.write_text('# new first\n%s\n\n%s\n' % (OTHER.hex(), KEY.hex()))
    keys = hostkeys.read(str(path))
    assert keys == [OTHER, KEY]
    auth = hostkeys.sign(KEY, 'hv1', 'heartbeat', {})
    assert hostkeys.verify(keys, auth, 'heartbeat', {}, window=60) == 'hv1'
    for bad in ('', 'not hex\n', 'abcd\n'):
        path.write_text(bad)
        with pytest.raises(hostkeys.KeyFileError):
            hostkeys.read(str(path))


def test_the_signer_reads_a_rotated_key_file(tmp_path):
    path = tmp_path / 'hv1.key'
    path.write_text(KEY.hex() + '\n')
    signer = hostkeys.Signer('hv1', str(path))
    auth = signer.sign('heartbeat', {})
    assert hostkeys.verify([KEY], auth, 'heartbeat', {}, window=60)
    path.write_text(OTHER.hex() + '\n' + KEY.hex() + '\n')
    os.utime(path, ns=(1, 1))
    auth = signer.sign('heartbeat', {})
    assert hostkeys.verify([OTHER], auth, 'heartbeat', {}, window=60)


class _Client(object):
    def __init__(self):
        self.sent = []

    def prepare(self, version):
        self.version = version
        return self

    def cast(self, ctxt, method, **kwargs):
        self.sent.append((self.version, method, kwargs))


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_the_agents_client_signs_what_the_conductor_verifies(
        database, conf, tmp_path, monkeypatch):
    keys_dir, key_file = _keys(conf, tmp_path)
    api = rpcapi.ConductorAPI(signer=hostkeys.Signer('hv1', key_file))
    api.client = _Client()
    api.heartbeat({}, 'hv1', {'rpc_version': '1.4'})
    api.report_operation({}, 'op-1', {'status': 'failed'}, host='hv1')
    api.report_progress({}, 'op-1', 50.0)
    assert [(v, m) for v, m, _ in api.client.sent] == [
        ('1.2', 'heartbeat'), ('1.2', 'report_operation'),
        ('1.2', 'report_progress')]
    calls = []
    monkeypatch.setattr(manager.hosts, 'record_heartbeat',
                        lambda *a: calls.append(('heartbeat',) + a))
    monkeypatch.setattr(manager.reports, 'apply_and_acknowledge',
                        lambda *a: calls.append(('report',) + a[1:]))
    monkeypatch.setattr(manager.operations, 'apply_progress',
                        lambda *a: calls.append(('progress',) + a))
    mgr = manager.ConductorManager()
    for _, method, kwargs in api.client.sent:
        getattr(mgr, method)({}, **_roundtrip(kwargs))
    assert [c[0] for c in calls] == ['heartbeat', 'report', 'progress']


def test_without_a_signer_the_client_sends_as_before():
    api = rpcapi.ConductorAPI()
    api.client = _Client()
    api.heartbeat({}, 'hv1', {})
    api.report_operation({}, 'op-1', {}, host='hv1')
    api.report_progress({}, 'op-1', 5.0)
    assert [(v, m, 'auth' in kw) for v, m, kw in api.client.sent] == [
        ('1.0', 'heartbeat', False), ('1.1', 'report_operation', False),
        ('1.0', 'report_progress', False)]


# -- the conductor's checks ---------------------------------------------------

def _keys(conf, tmp_path, require=True):
    """hv1 and rogue have keys; returns the keys dir and hv1's key file."""
    keys_dir = tmp_path / 'keys'
    keys_dir.mkdir(exist_ok=True)
    (keys_dir / 'hv1').write_text(KEY.hex() + '\n')
    (keys_dir / 'rogue').write_text(OTHER.hex() + '\n')
    key_file = tmp_path / 'hv1.key'
    key_file.write_text(KEY.hex() + '\n')
    conf.set('host_keys_dir', str(keys_dir), group='conductor')
    conf.set('require_host_keys', require, group='conductor')
    hostauth.reset()
    return keys_dir, str(key_file)


def _operation(op_id='op-1', host='hv1'):
    with db.transaction() as s:
        s.add(models.Operation(id=op_id, project_id='p1', server_id='s1',
                               disk_id='d1', host=host, action='create',
                               status='running'))


@pytest.fixture
def endpoints(database, conf, tmp_path, monkeypatch):
    _keys(conf, tmp_path)
    _operation()
    calls = []
    monkeypatch.setattr(manager.hosts, 'record_heartbeat',
                        lambda host, info: calls.append(('heartbeat', host)))
    monkeypatch.setattr(
        manager.reports, 'apply_and_acknowledge',
        lambda ctxt, op, report, host: calls.append(('report', op)))
    monkeypatch.setattr(manager.operations, 'apply_progress',
                        lambda op, p: calls.append(('progress', op)))
    yield manager.ConductorManager(), calls
    hostauth.reset()


def _refusals(caplog):
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(hostauth.MARKER)
            and r.levelno >= logging.ERROR]


def _count(method, reason):
    return hostauth.REFUSED.labels(method=method, reason=reason)._value.get()


def _report(key, signer, op='op-1', host='hv1', status='succeeded'):
    args = {'operation_id': op, 'report': {'status': status},
            'host': host}
    return dict(args, auth=hostkeys.sign(key, signer, 'report_operation',
                                         args))


def _heartbeat(key, signer, host='hv1'):
    args = {'host': host, 'info': {'rpc_version': '1.4'}}
    return dict(args, auth=hostkeys.sign(key, signer, 'heartbeat', args))


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_the_right_host_is_accepted(endpoints, caplog):
    mgr, calls = endpoints
    mgr.heartbeat({}, **_heartbeat(KEY, 'hv1'))
    mgr.report_operation({}, **_report(KEY, 'hv1'))
    assert calls == [('heartbeat', 'hv1'), ('report', 'op-1')]
    assert _refusals(caplog) == []


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_another_host_speaking_for_hv1_is_refused(endpoints, caplog):
    mgr, calls = endpoints
    before = _count('heartbeat', 'wrong_host')
    # rogue signs with its own key but speaks for hv1
    mgr.heartbeat({}, **_heartbeat(OTHER, 'rogue', host='hv1'))
    mgr.report_operation({}, **_report(OTHER, 'rogue', host='hv1'))
    # rogue signs as hv1 without hv1's key
    mgr.heartbeat({}, **_heartbeat(OTHER, 'hv1'))
    # rogue reports hv1's operation as its own
    mgr.report_operation({}, **_report(OTHER, 'rogue', host='rogue'))
    assert calls == []
    refused = _refusals(caplog)
    assert len(refused) == 4
    assert 'wrong_host' in refused[0] and 'bad_signature' in refused[2]
    assert 'not_its_operation' in refused[3]
    assert _count('heartbeat', 'wrong_host') == before + 1


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_a_tampered_report_is_refused(endpoints, caplog):
    mgr, calls = endpoints
    message = _report(KEY, 'hv1')
    message['report']['status'] = 'failed'
    mgr.report_operation({}, **message)
    assert calls == []
    assert 'bad_signature' in _refusals(caplog)[0]


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_a_replay_is_refused_in_and_past_the_window(endpoints, caplog, conf):
    mgr, calls = endpoints
    message = _heartbeat(KEY, 'hv1')
    mgr.heartbeat({}, **message)
    mgr.heartbeat({}, **message)
    assert calls == [('heartbeat', 'hv1')]
    assert 'replayed' in _refusals(caplog)[0]
    args = {'host': 'hv1', 'info': {}}
    old = dict(args, auth=hostkeys.sign(KEY, 'hv1', 'heartbeat', args,
                                        now=1.0))
    mgr.heartbeat({}, **old)
    assert calls == [('heartbeat', 'hv1')]
    assert 'expired' in _refusals(caplog)[1]


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_a_missing_signature_is_refused_when_required(endpoints, caplog,
                                                      conf):
    mgr, calls = endpoints
    mgr.heartbeat({}, 'hv1', {})
    mgr.report_operation({}, 'op-1', {'status': 'succeeded'}, host='hv1')
    mgr.report_progress({}, 'op-1', 40.0)
    assert calls == []
    assert all('unsigned' in r for r in _refusals(caplog))
    assert len(_refusals(caplog)) == 3

    caplog.clear()
    conf.set('require_host_keys', False, group='conductor')
    mgr.heartbeat({}, 'hv1', {})
    mgr.heartbeat({}, 'hv1', {})
    assert calls == [('heartbeat', 'hv1')] * 2
    warnings = [r for r in caplog.records if 'unsigned' in r.getMessage()]
    # Once for the deployment, once for hv1, which has a key.
    assert len(warnings) == 2
    assert all(w.levelno == logging.WARNING for w in warnings)
    assert 'hv1' in warnings[1].getMessage()
    # A signed message is still verified.
    mgr.heartbeat({}, **_heartbeat(OTHER, 'hv1'))
    assert len(calls) == 2
    assert 'bad_signature' in _refusals(caplog)[0]


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_a_host_without_a_key_is_refused(endpoints, caplog):
    mgr, calls = endpoints
    mgr.heartbeat({}, **_heartbeat(KEY, 'hv9', host='hv9'))
    mgr.heartbeat({}, **_heartbeat(KEY, '../keys/hv1', host='../keys/hv1'))
    assert calls == []
    assert all('unknown_host' in r for r in _refusals(caplog))


def test_livesnap_manage_makes_and_rotates_keys(tmp_path):
    keys_dir = tmp_path / 'keys'
    conf_file = tmp_path / 'l.conf'
    conf_file.write_text('[conductor]\nhost_keys_dir = %s\n' % keys_dir)
    agent_file = tmp_path / 'hv1.key'

    def manage(*extra):
        # A process of its own: the command parses its configuration into
        # the global CONF.
        return subprocess.run(
            [sys.executable, '-m', 'conductor.manage', '--config-file',
             str(conf_file), 'host', 'key', 'create', 'hv1', '--output',
             str(agent_file)] + list(extra),
            capture_output=True, text=True, timeout=120).returncode

    assert manage() == 0
    first = hostkeys.read(str(keys_dir / 'hv1'))
    assert first == hostkeys.read(str(agent_file))
    assert os.stat(agent_file).st_mode & 0o077 == 0
    assert os.stat(keys_dir / 'hv1').st_mode & 0o077 == 0
    assert manage() == 1
    assert manage('--rotate') == 0
    both = hostkeys.read(str(keys_dir / 'hv1'))
    assert both[1:] == first and both[0] == hostkeys.read(str(agent_file))[0]


@pytest.mark.parametrize('database', ['sqlite'], indirect=True)
def test_the_upgrade_check_names_hosts_without_a_key(database, conf,
                                                     tmp_path):
    from conductor import status
    from oslo_upgradecheck import upgradecheck

    def code():
        return status.Checks()._check_host_keys().code

    assert code() == upgradecheck.Code.SUCCESS
    conf.set('require_host_keys', True, group='conductor')
    assert code() == upgradecheck.Code.FAILURE
    _keys(conf, tmp_path, require=False)
    db.host_heartbeat('hv1')
    db.host_heartbeat('hv2')
    assert code() == upgradecheck.Code.WARNING
    conf.set('require_host_keys', True, group='conductor')
    result = status.Checks()._check_host_keys()
    assert result.code == upgradecheck.Code.FAILURE
    assert 'hv2' in result.details and 'hv1' not in result.details
    (tmp_path / 'keys' / 'hv2').write_text(OTHER.hex() + '\n')
    assert code() == upgradecheck.Code.SUCCESS
