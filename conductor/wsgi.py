"""The REST API as a WSGI application for uWSGI, mod_wsgi or gunicorn.

``conductor.wsgi:application`` is the same API that ``livesnap-conductor``
serves with its embedded server.  It reads its configuration, as nova's
WSGI applications do, from the files named in ``OS_LIVESNAP_CONFIG_FILES``
(separated by ``;``) and the directory in ``OS_LIVESNAP_CONFIG_DIR``, or
else from oslo.config's default places (``/etc/livesnap/livesnap.conf``)::

    OS_LIVESNAP_CONFIG_FILES=/etc/livesnap/livesnap.conf \\
        gunicorn --workers 4 --threads 4 --bind 0.0.0.0:8780 \\
        conductor.wsgi:application

A request needs only the database and the bus: the database engine and
the RPC transport are made on first use, in each worker process, so the
module may be imported before the server forks (``--preload``).  The rest
of the conductor stays in ``livesnap-conductor`` processes beside it with
``[api] enabled = false``: the RPC server that takes the agents' reports
and heartbeats, the periodic tasks (deferred deletions, overdue
operations) and the schema upgrade at start.  Without such a process
operations are sent but never finish.
"""

import os

from oslo_config import cfg

from conductor.api import loader as api_loader
from livesnap import service

CONF = cfg.CONF

CONFIG_FILES_ENV = 'OS_LIVESNAP_CONFIG_FILES'
CONFIG_DIR_ENV = 'OS_LIVESNAP_CONFIG_DIR'


def config_args(environ=None):
    """The oslo.config command line for the files and directory named in
    the environment; empty (default files) when neither is set.
    """
    environ = os.environ if environ is None else environ
    args = []
    for path in (environ.get(CONFIG_FILES_ENV) or '').split(';'):
        if path.strip():
            args += ['--config-file', path.strip()]
    if environ.get(CONFIG_DIR_ENV):
        args += ['--config-dir', environ[CONFIG_DIR_ENV]]
    return args


def init_application(environ=None):
    """Parse the configuration, set up logging, return the WSGI app (the
    pipeline of ``[wsgi] api_paste_config``).
    """
    service.prepare('livesnap-api', config_args(environ))
    return api_loader.load_app()


application = init_application()
