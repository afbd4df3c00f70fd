"""The embedded HTTP server of the REST API: waitress.

waitress accepts and reads connections in one I/O thread (asyncore) and
runs complete requests in a pool of ``[api] threads``; it holds up to
``[api] connection_limit`` connections and listens with a backlog of
``[api] backlog``, so a burst of clients queues instead of being reset
(``wsgiref``, used before, listened with a backlog of 5 and a thread per
connection).  A deployment that wants processes instead serves
``conductor.wsgi:application`` from uWSGI, mod_wsgi or gunicorn.
"""

import logging
import threading

from waitress import server as waitress_server
from waitress import wasyncore

LOG = logging.getLogger(__name__)

#: Seconds the I/O loop sleeps in poll() at most; stop() wakes it at once.
_POLL_TIMEOUT = 1.0


class APIServer(object):
    """Serve ``app`` on ``host``:``port`` (0: any free port) from a
    background thread until :meth:`stop`.

    :param threads: request threads.
    :param backlog: listen backlog.
    :param connection_limit: most open connections.
    :param client_timeout: seconds an idle connection is kept.
    :param max_request_body_size: bodies larger than this are refused by
        waitress itself (413); the API refuses smaller ones it does not
        want in its own JSON shape, so this is only the outer bound.
    """

    def __init__(self, app, host, port, threads=8, backlog=1024,
                 connection_limit=1000, client_timeout=60,
                 max_request_body_size=1024 * 1024):
        self._map = {}
        self._stopping = threading.Event()
        self.httpd = waitress_server.create_server(
            app, map=self._map, host=host, port=port, threads=threads,
            backlog=backlog, connection_limit=connection_limit,
            channel_timeout=client_timeout,
            max_request_body_size=max_request_body_size,
            asyncore_use_poll=True, expose_tracebacks=False,
            ident='livesnap', clear_untrusted_proxy_headers=False)
        self.thread = None

    @property
    def port(self):
        return int(self.httpd.effective_port)

    def start(self):
        self.thread = threading.Thread(target=self._loop, name='api',
                                       daemon=True)
        self.thread.start()
        LOG.info('REST API listening on %(addr)s:%(port)s (waitress, '
                 '%(threads)d threads, backlog %(backlog)d)',
                 {'addr': self.httpd.effective_host, 'port': self.port,
                  'threads': self.httpd.adj.threads,
                  'backlog': self.httpd.adj.backlog})

    def _loop(self):
        # waitress's own run() loops until its socket map is empty; this
        # one also ends when stop() asks, so that only this thread ever
        # touches the map while it runs.
        while not self._stopping.is_set():
            wasyncore.loop(timeout=_POLL_TIMEOUT, map=self._map,
                           use_poll=True, count=1)

    def stop(self):
        """Stop accepting, end the I/O loop, close every connection and
        let running requests finish (waitress waits 5 s for them).
        """
        self._stopping.set()
        if self.thread is not None:
            self.httpd.pull_trigger()
            self.thread.join()
        wasyncore.close_all(self._map, ignore_all=True)
        self.httpd.task_dispatcher.shutdown()
