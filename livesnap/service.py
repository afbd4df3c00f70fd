"""Start-up and shutdown shared by the livesnap processes."""

import logging
import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log as oslo_logging

from livesnap import conf  # noqa: F401  (registers the options)
from livesnap import context
from livesnap import version

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: Exit status of a process that refuses its configuration.
EXIT_CONFIG = 2


class ConfigurationError(Exception):
    """The configuration cannot work; the message says what to set."""


def prepare(prog, argv=None):
    """Parse the command line and config files, set up logging with
    oslo.log (``[DEFAULT] debug``, ``log_file``, ``log_dir``,
    ``use_syslog``, ``use_journal``, ``use_json``,
    ``logging_context_format_string``, ``default_log_levels``, ...;
    standard error when no destination is named).  Every handler gets
    the ``%(request_ids)s`` of :class:`livesnap.context.RequestIdFilter`
    that livesnap's default format strings (``livesnap.conf.LOG_FORMAT``)
    show.
    """
    CONF(sys.argv[1:] if argv is None else argv, project='livesnap',
         prog=prog, version=version.VERSION)
    if not (CONF.log_file or CONF.log_dir or CONF.use_journal or
            CONF.use_syslog):
        # Nowhere named: standard error, as livesnap always logged (oslo.log
        # would pick standard output).
        CONF.set_default('use_stderr', True)
    oslo_logging.setup(CONF, 'livesnap', version=version.VERSION)
    for handler in logging.getLogger().handlers:
        handler.addFilter(context.RequestIdFilter())
    for noisy in ('amqp', 'kombu', 'oslo_messaging', 'qemu.qmp',
                  'alembic.runtime.migration'):
        logging.getLogger(noisy).setLevel(
            logging.INFO if CONF.debug else logging.WARNING)
    # "Task queue depth is N" on every request while all the API's threads
    # are busy: normal under load, the backlog does its work.
    logging.getLogger('waitress.queue').setLevel(
        logging.DEBUG if CONF.debug else logging.ERROR)


def serve(prog, factories, argv=None):
    """Run services until SIGTERM or SIGINT: parse the configuration, start
    each service in order, wait, stop them in reverse order.

    :param factories: callables returning objects with start() and stop();
        called after the configuration is parsed.
    :returns: 0, or :data:`EXIT_CONFIG` if a service refused the
        configuration (:class:`ConfigurationError`, logged).
    """
    prepare(prog, argv)
    services = []
    try:
        for factory in factories:
            svc = factory()
            svc.start()
            services.append(svc)
        wait_for_signal()
    except ConfigurationError as exc:
        LOG.error('%(prog)s cannot start: %(error)s',
                  {'prog': prog, 'error': exc})
        return EXIT_CONFIG
    finally:
        for svc in reversed(services):
            svc.stop()
    return 0


def wait_for_signal():
    """Block until SIGTERM or SIGINT."""
    done = threading.Event()

    def _handler(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    while not done.is_set():
        done.wait(1.0)
