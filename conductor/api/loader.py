"""Load the REST API's WSGI pipeline from its PasteDeploy file.

The pipeline (``etc/livesnap/api-paste.ini``) names the middleware of the
API, outermost first, and the application at its end; the composite
``livesnap-api`` has one pipeline per ``[api] auth_strategy``
(:func:`pipeline_factory` picks it, as nova's ``pipeline_factory_v21``
does).  ``livesnap-conductor``'s embedded server and
``conductor.wsgi:application`` both serve what :func:`load_app` returns.

The file is ``[wsgi] api_paste_config``: an absolute path, or a name
looked for next to the configuration files (``--config-file``,
``--config-dir``, ``/etc/livesnap``...).  When the default name is found
nowhere, the copy packaged with livesnap (the same file as in ``etc/``) is
used, so a deployment without its own ``api-paste.ini`` serves the standard
pipeline.
"""

import logging
import os

from oslo_config import cfg
from paste import deploy

from conductor.api import auth
from livesnap.conf import api as conf_api
from livesnap import service as common_service

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: The composite of the paste file that is the API.
APP_NAME = 'livesnap-api'

#: The paste file packaged with livesnap (a copy of etc/livesnap's).
PACKAGED_PASTE_CONFIG = os.path.join(os.path.dirname(__file__),
                                     'api-paste.ini')


def paste_config_path():
    """The paste file to load (see the module's docstring).

    :raises: livesnap.service.ConfigurationError if the configured file
        does not exist.
    """
    name = CONF.wsgi.api_paste_config
    if os.path.isabs(name):
        found = name if os.path.isfile(name) else None
    else:
        try:
            found = CONF.find_file(name)
        except cfg.NotInitializedError:
            # Not parsed (an application made in tests): no config dirs.
            found = None
    if found:
        return os.path.abspath(found)
    if name == conf_api.DEFAULT_API_PASTE_CONFIG:
        return PACKAGED_PASTE_CONFIG
    raise common_service.ConfigurationError(
        '[wsgi] api_paste_config = %s: no such file (a relative name is '
        'looked for next to the configuration files).' % name)


def load_app(path=None):
    """The API's WSGI application: the pipeline of ``[api] auth_strategy``
    in the paste file ``path`` (default :func:`paste_config_path`).

    :raises: livesnap.service.ConfigurationError
    """
    path = path or paste_config_path()
    LOG.info('Loading the API pipeline %(name)s from %(path)s',
             {'name': APP_NAME, 'path': path})
    return deploy.loadapp('config:%s' % path, name=APP_NAME)


def pipeline_factory(loader, global_conf, **local_conf):
    """Paste composite factory: the pipeline named after ``[api]
    auth_strategy`` (a space-separated list of filters, then the app).

    :raises: livesnap.service.ConfigurationError when the file has no
        pipeline for the strategy, Keystone's is not configured
        (``conductor.api.auth.check_config``), or the ``keystone``
        pipeline has no keystonemiddleware ``auth_token`` filter: the API
        trusts the identity headers that filter sets, so without it any
        client could claim any project and role.
    """
    strategy = CONF.api.auth_strategy
    if strategy not in local_conf:
        raise common_service.ConfigurationError(
            'The API pipeline %s has no "%s" pipeline for [api] '
            'auth_strategy = %s.' % (APP_NAME, strategy, strategy))
    auth.check_config()
    names = local_conf[strategy].split()
    app = loader.get_app(names[-1], global_conf=global_conf)
    validated = False
    for name in reversed(names[:-1]):
        app = loader.get_filter(name, global_conf=global_conf)(app)
        if strategy == 'keystone':
            validated = validated or _validates_tokens(app)
    if strategy == 'keystone' and not validated:
        raise common_service.ConfigurationError(
            'The "keystone" pipeline of %s has no keystonemiddleware '
            'auth_token filter: the API would trust identity headers any '
            'client can send.' % APP_NAME)
    return app


def _validates_tokens(app):
    """True if ``app`` is keystonemiddleware's auth_token middleware."""
    from keystonemiddleware import auth_token
    return isinstance(app, auth_token.AuthProtocol)
