from oslo_config import cfg

database_group = cfg.OptGroup('database', title='Database options')

opts = [
    cfg.StrOpt('connection',
               default='sqlite:///$state_path/livesnap.sqlite',
               secret=True,
               help='SQLAlchemy URL of the database: a SQLite file for one '
                    'conductor, postgresql://... or mysql+pymysql://... '
                    'when several conductors share it.'),
    cfg.BoolOpt('auto_migrate', default=True,
                help='Upgrade the schema to the latest version when the '
                     'conductor starts.'),
]


def register_opts(conf):
    conf.register_group(database_group)
    conf.register_opts(opts, group=database_group)


def list_opts():
    return {database_group: opts}
