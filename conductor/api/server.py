"""A threaded WSGI server for the API (standard library only)."""

import logging
import socketserver
import threading
from wsgiref import simple_server

LOG = logging.getLogger(__name__)


class _Handler(simple_server.WSGIRequestHandler):

    def log_message(self, fmt, *args):
        LOG.debug('%s ' + fmt, self.address_string(), *args)


class _ThreadingServer(socketserver.ThreadingMixIn,
                       simple_server.WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class APIServer(object):

    def __init__(self, app, host, port):
        self.httpd = simple_server.make_server(
            host, port, app, server_class=_ThreadingServer,
            handler_class=_Handler)
        self.thread = None

    @property
    def port(self):
        return self.httpd.server_address[1]

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       name='api', daemon=True)
        self.thread.start()
        LOG.info('REST API listening on %(addr)s:%(port)s',
                 {'addr': self.httpd.server_address[0], 'port': self.port})

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
