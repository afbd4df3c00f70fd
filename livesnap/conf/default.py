from oslo_config import cfg

opts = [
    cfg.StrOpt('state_path',
               default='/var/lib/livesnap',
               help='Top-level directory for livesnap state: the SQLite '
                    'database by default and the agent journal.'),
]


def register_opts(conf):
    conf.register_opts(opts)


def list_opts():
    return {'DEFAULT': opts}
