"""``conductor.wsgi:application``: configured from the environment, it
answers as the embedded server's API does.  Run in a child process, since
importing the module parses the configuration of the whole process."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent('''
    import io, json, sys
    from conductor import wsgi
    from oslo_config import cfg

    def call(path, token=None):
        env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': path,
               'QUERY_STRING': '', 'SERVER_NAME': 'x', 'SERVER_PORT': '80',
               'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.url_scheme': 'http',
               'wsgi.input': io.BytesIO(b'')}
        if token:
            env['HTTP_X_AUTH_TOKEN'] = token
        status = []
        body = b''.join(wsgi.application(
            env, lambda s, h, exc_info=None: status.append(s)))
        return int(status[0].split()[0]), json.loads(body)

    doc = call('/v1/openapi.json')
    refused = call('/v1/servers', 'not-a-token')
    print(json.dumps({'port': cfg.CONF.api.port,
                      'enabled': cfg.CONF.api.enabled,
                      'openapi': doc[0], 'refused': refused}))
''')


#: The tree under test first on the child's path (its cwd is elsewhere).
TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _probe(tmp_path, env_extra):
    env = dict(os.environ, PYTHONPATH=TOP)
    env.pop('OS_LIVESNAP_CONFIG_FILES', None)
    env.pop('OS_LIVESNAP_CONFIG_DIR', None)
    env.update(env_extra)
    out = subprocess.run([sys.executable, '-c', PROBE], env=env,
                         cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_config_files_and_dir_from_the_environment(tmp_path):
    tokens = tmp_path / 'tokens.json'
    tokens.write_text('{}')
    first = tmp_path / 'a.conf'
    first.write_text('[api]\nport = 9001\ntoken_file = %s\n' % tokens)
    second = tmp_path / 'b.conf'
    second.write_text('[api]\nport = 9002\n')
    confdir = tmp_path / 'livesnap.conf.d'
    confdir.mkdir()
    (confdir / 'x.conf').write_text('[api]\nenabled = false\n')
    got = _probe(tmp_path, {
        'OS_LIVESNAP_CONFIG_FILES': '%s;%s' % (first, second),
        'OS_LIVESNAP_CONFIG_DIR': str(confdir)})
    assert got['port'] == 9002  # later files win, as on a command line
    assert got['enabled'] is False
    assert got['openapi'] == 200
    assert got['refused'][0] == 401
    assert got['refused'][1]['error']['code'] == 'unauthorized'


def test_defaults_without_environment(tmp_path):
    got = _probe(tmp_path, {'HOME': str(tmp_path)})
    assert got['port'] == 8780
    assert got['openapi'] == 200


def test_packaged_paste_file_is_the_one_in_etc():
    from conductor.api import loader
    with open(os.path.join(TOP, 'etc', 'livesnap',
                           'api-paste.ini')) as f:
        with open(loader.PACKAGED_PASTE_CONFIG) as packaged:
            assert packaged.read() == f.read(), (
                'conductor/api/api-paste.ini differs from etc/livesnap/'
                'api-paste.ini: copy it')


HEALTH_PROBE = textwrap.dedent('''
    import io, json
    from conductor import wsgi

    env = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/healthcheck',
           'QUERY_STRING': '', 'SERVER_NAME': 'x', 'SERVER_PORT': '80',
           'SERVER_PROTOCOL': 'HTTP/1.1', 'wsgi.url_scheme': 'http',
           'wsgi.input': io.BytesIO(b'')}
    status = []
    b''.join(wsgi.application(
        env, lambda s, h, exc_info=None: status.append(s)))
    print(json.dumps({'healthcheck': int(status[0].split()[0])}))
''')


def test_paste_file_next_to_the_config_file(tmp_path):
    """An api-paste.ini beside livesnap.conf is the pipeline served: here
    one without the healthcheck filter, so the API answers 404.
    """
    from conductor.api import loader
    with open(loader.PACKAGED_PASTE_CONFIG) as f:
        paste = f.read()
    (tmp_path / 'api-paste.ini').write_text(
        paste.replace('request_id healthcheck livesnap',
                      'request_id livesnap'))
    config = tmp_path / 'livesnap.conf'
    config.write_text('[api]\ntoken_file = %s\n' % (tmp_path / 't.json'))
    env = dict(os.environ, OS_LIVESNAP_CONFIG_FILES=str(config),
               PYTHONPATH=TOP)
    env.pop('OS_LIVESNAP_CONFIG_DIR', None)
    out = subprocess.run([sys.executable, '-c', HEALTH_PROBE], env=env,
                         cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        'healthcheck': 404}


def test_missing_paste_file_refused(conf, tmp_path):
    from conductor.api import loader
    from livesnap import service
    conf.set('api_paste_config', str(tmp_path / 'nope.ini'), group='wsgi')
    with pytest.raises(service.ConfigurationError) as err:
        loader.load_app()
    assert 'nope.ini' in str(err.value)
    conf.set('api_paste_config', 'api-paste.ini', group='wsgi')
    assert loader.paste_config_path() == loader.PACKAGED_PASTE_CONFIG


def test_keystone_pipeline_without_auth_token_refused(conf, tmp_path):
    """The API trusts the identity headers auth_token sets: a ``keystone``
    pipeline that leaves it out would let any client claim any project
    and role, so it is refused at load.
    """
    from keystonemiddleware import auth_token

    from conductor.api import loader
    from livesnap import service
    from livesnap_tools import fixtures as ls_fixtures
    for group, opts in auth_token.list_opts():
        ls_fixtures.CONF.register_opts(opts, group=group)
    conf.set('auth_strategy', 'keystone', group='api')
    conf.set('www_authenticate_uri', 'http://keystone.invalid/identity',
             group='keystone_authtoken')
    with open(loader.PACKAGED_PASTE_CONFIG) as f:
        paste = f.read()
    path = tmp_path / 'api-paste.ini'
    path.write_text(paste.replace('healthcheck authtoken livesnap',
                                  'healthcheck livesnap'))
    with pytest.raises(service.ConfigurationError) as err:
        loader.load_app(str(path))
    assert 'auth_token' in str(err.value)
    assert loader.load_app(loader.PACKAGED_PASTE_CONFIG) is not None
