from oslo_config import cfg

api_group = cfg.OptGroup('api', title='REST API options')

opts = [
    cfg.HostAddressOpt('host_ip', default='127.0.0.1',
                       help='Address the REST API listens on.'),
    cfg.PortOpt('port', default=8780,
                help='Port the REST API listens on.'),
    cfg.StrOpt('auth_strategy', default='tokens', choices=['tokens'],
               help='How requests are authenticated. "tokens": a file '
                    'mapping tokens to a project and roles.'),
    cfg.StrOpt('token_file', default='/etc/livesnap/tokens.json',
               help='JSON file {"TOKEN": {"project_id": "...", '
                    '"roles": ["admin", ...]}} used with '
                    'auth_strategy=tokens.'),
    cfg.IntOpt('max_request_body_size', default=65536, min=1024,
               help='Largest request body accepted, in bytes.'),
]


def register_opts(conf):
    conf.register_group(api_group)
    conf.register_opts(opts, group=api_group)


def list_opts():
    return {api_group: opts}
