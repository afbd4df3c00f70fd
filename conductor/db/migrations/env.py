"""Alembic environment for livesnap's schema.

Run programmatically by conductor.db.migration; the connection comes from
``config.attributes['connection']`` or the URL in the config.
"""

from alembic import context
import sqlalchemy as sa

from conductor.db import models

config = context.config
target_metadata = models.Base.metadata


def run_migrations_online():
    connectable = config.attributes.get('connection')
    if connectable is None:
        engine = sa.create_engine(config.get_main_option('sqlalchemy.url'))
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection):
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
