"""Schema migrations with Alembic, run from code (no alembic.ini)."""

import os

from alembic import command
from alembic import config as alembic_config
from alembic import migration as alembic_migration

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), 'migrations')


def _config(url=None):
    cfg = alembic_config.Config()
    cfg.set_main_option('script_location', MIGRATIONS_DIR)
    if url:
        cfg.set_main_option('sqlalchemy.url', url.replace('%', '%%'))
    return cfg


def upgrade(engine, revision='head'):
    """Bring the schema of ``engine``'s database to ``revision``."""
    cfg = _config()
    with engine.begin() as connection:
        cfg.attributes['connection'] = connection
        command.upgrade(cfg, revision)


def current_revision(engine):
    """The schema's revision, or None for a database with no schema
    (``livesnap-manage db sync`` never run on it).
    """
    with engine.connect() as connection:
        return alembic_migration.MigrationContext.configure(
            connection).get_current_revision()


def revision(url, message):
    """Autogenerate a new migration (developer tool)."""
    command.revision(_config(url), message=message, autogenerate=True)
