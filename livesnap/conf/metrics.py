from oslo_config import cfg

metrics_group = cfg.OptGroup(
    'metrics', title='Prometheus metrics endpoint',
    help='Each livesnap-conductor and livesnap-agent can serve its metrics '
         'for Prometheus at http://HOST:PORT/metrics. Set the port in the '
         'configuration file of each process; 0 (the default) serves '
         'nothing.')

opts = [
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='Address the metrics endpoint listens on. Use '
                            '0.0.0.0 (or the address Prometheus reaches) '
                            'when Prometheus runs on another machine; the '
                            'metrics carry project ids, host names and '
                            'counts, no credentials.'),
    cfg.PortOpt('conductor_port', default=0,
                help='Port of livesnap-conductor\'s metrics endpoint; 0 '
                     'disables it. It is a port of its own, not the REST '
                     'API\'s, so it works whether the API is served by the '
                     'conductor or by a WSGI server with several worker '
                     'processes, and needs no token.'),
    cfg.PortOpt('agent_port', default=0,
                help='Port of livesnap-agent\'s metrics endpoint; 0 '
                     'disables it.'),
]


def register_opts(conf):
    conf.register_group(metrics_group)
    conf.register_opts(opts, group=metrics_group)


def list_opts():
    return {metrics_group: opts}
