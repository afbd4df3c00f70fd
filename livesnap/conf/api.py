from oslo_config import cfg

api_group = cfg.OptGroup('api', title='REST API options')
wsgi_group = cfg.OptGroup('wsgi', title='WSGI pipeline of the REST API')

#: The default ``[wsgi] api_paste_config``.
DEFAULT_API_PASTE_CONFIG = 'api-paste.ini'

opts = [
    cfg.HostAddressOpt('host_ip', default='127.0.0.1',
                       help='Address the REST API listens on.'),
    cfg.PortOpt('port', default=8780,
                help='Port the REST API listens on.'),
    cfg.BoolOpt('enabled', default=True,
                help='Serve the REST API from livesnap-conductor (and '
                     'livesnap-all-in-one). Set it to false in the '
                     'conductors that only handle agents\' reports, '
                     'heartbeats and the periodic tasks while a WSGI '
                     'server (uWSGI, mod_wsgi, gunicorn) serves the API '
                     'from conductor.wsgi:application.'),
    cfg.IntOpt('threads', default=8, min=1,
               help='Threads of the embedded HTTP server (waitress) that '
                    'run requests; more requests than threads wait in its '
                    'queue, their connections already accepted.'),
    cfg.IntOpt('backlog', default=1024, min=1,
               help='Listen backlog of the embedded HTTP server: '
                    'connections the kernel holds before they are '
                    'accepted (also capped by net.core.somaxconn).'),
    cfg.IntOpt('connection_limit', default=1000, min=1,
               help='Most open client connections of the embedded HTTP '
                    'server; past it, new ones wait in the backlog.'),
    cfg.IntOpt('client_timeout', default=60, min=1,
               help='Seconds an idle keep-alive connection to the embedded '
                    'HTTP server stays open.'),
    cfg.StrOpt('auth_strategy', default='tokens',
               choices=[('tokens', 'a JSON file mapping tokens to a project '
                                   'and roles ([api] token_file)'),
                        ('keystone', 'Keystone tokens validated by '
                                     'keystonemiddleware auth_token '
                                     '([keystone_authtoken] options)')],
               help='How requests are authenticated. In no mode does an '
                    'unauthenticated request reach a controller.'),
    cfg.StrOpt('token_file', default='/etc/livesnap/tokens.json',
               help='JSON file {"TOKEN": {"project_id": "...", '
                    '"roles": ["admin", ...]}} used with '
                    'auth_strategy=tokens.'),
    cfg.IntOpt('max_request_body_size', default=65536, min=1024,
               help='Largest request body accepted, in bytes; a larger '
                    'one is answered 413.'),
    cfg.IntOpt('default_page_size', default=1000, min=1,
               help='Items a list (servers, snapshots, operations, hosts, '
                    'policies, policy runs) returns when the request has '
                    'no "limit"; a "next" link follows when there may be '
                    'more.'),
    cfg.IntOpt('max_page_size', default=1000, min=1,
               help='Largest "limit" a list request may ask for; a larger '
                    'one is lowered to it.'),
    cfg.IntOpt('operations_per_minute', default=60, min=0,
               help='Most snapshot operations (create, delete, revert) a '
                    'project may start in any 60 seconds, counted in the '
                    'shared database so the limit holds across several '
                    'conductors; more are answered 429 with Retry-After. '
                    '0 disables the limit.'),
    cfg.IntOpt('idempotency_window', default=86400, min=60,
               help='Seconds a POST or DELETE\'s Idempotency-Key is '
                    'remembered, per project, in the shared database: a '
                    'repeat within it is answered the first request\'s '
                    'result (Idempotent-Replayed: true), on any conductor '
                    'and after a restart, and starts no second operation. '
                    'Older keys are purged.'),
]

wsgi_opts = [
    cfg.StrOpt('api_paste_config', default=DEFAULT_API_PASTE_CONFIG,
               help='The PasteDeploy file of the REST API\'s pipeline '
                    '(middleware and application, composite '
                    '"livesnap-api"): an absolute path, or a name looked '
                    'for next to the configuration files and in '
                    '/etc/livesnap. When the default name is found '
                    'nowhere, the copy packaged with livesnap is used.'),
]


def register_opts(conf):
    conf.register_group(api_group)
    conf.register_opts(opts, group=api_group)
    conf.register_group(wsgi_group)
    conf.register_opts(wsgi_opts, group=wsgi_group)


def list_opts():
    return {api_group: opts, wsgi_group: wsgi_opts}
