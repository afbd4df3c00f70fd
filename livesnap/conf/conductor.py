from oslo_config import cfg

conductor_group = cfg.OptGroup('conductor', title='Conductor policy options')

opts = [
    cfg.StrOpt('host', default='conductor',
               help='Name of this conductor, recorded with the operations '
                    'it starts.'),
    cfg.IntOpt('host_down_time', default=30, min=1,
               help='Seconds without a heartbeat after which an agent\'s '
                    'host is considered down; new work for it is refused '
                    'with 503.'),
]


def register_opts(conf):
    conf.register_group(conductor_group)
    conf.register_opts(opts, group=conductor_group)


def list_opts():
    return {conductor_group: opts}
