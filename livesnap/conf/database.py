from oslo_config import cfg

database_group = cfg.OptGroup('database', title='Database options')

opts = [
    cfg.StrOpt('connection',
               default='sqlite:///$state_path/livesnap.sqlite',
               secret=True,
               help='SQLAlchemy URL of the database: a SQLite file for one '
                    'conductor, postgresql://... or mysql+pymysql://... '
                    'when several conductors share it.'),
    cfg.IntOpt('max_pool_size', default=10, min=1,
               help='Connections each of the conductor\'s two pools '
                    '(transactions, and the API\'s reads) keeps open '
                    '(PostgreSQL, MySQL). Keep it at least [api] threads; '
                    'count two pools per conductor process, or per WSGI '
                    'worker, against the server\'s max_connections.'),
    cfg.IntOpt('max_overflow', default=20, min=0,
               help='Connections a pool may open beyond max_pool_size in '
                    'a burst; they are closed when returned.'),
    cfg.BoolOpt('auto_migrate', default=True,
                help='Upgrade the schema to the latest version when the '
                     'conductor starts.'),
]


def register_opts(conf):
    conf.register_group(database_group)
    conf.register_opts(opts, group=database_group)


def list_opts():
    return {database_group: opts}
