"""The request context carried by every RPC message.

A small dict is enough: who asked (project, roles) and a request id that
ties the API request, the conductor's decision and the agent's log lines
together.  ``global_request_id`` is the id a caller (another OpenStack
service) sent in ``X-OpenStack-Request-ID``, kept so one request can be
followed across services.

Each thread's current request is kept by oslo.context (its thread-local
store): the API sets it for the request it serves, the RPC servers for the
message they dispatch (``livesnap.rpc.ContextSerializer``), and
:class:`RequestIdFilter` puts it on every log line of that thread.
"""

import logging
import uuid

from oslo_context import context as oslo_context


def make(project_id=None, roles=(), request_id=None, global_request_id=None):
    """A new RPC context.

    Without ``global_request_id``, the current request's is taken when
    ``request_id`` is the current request's own (an API request: the
    controllers pass only its request id).
    """
    current = oslo_context.get_current()
    if global_request_id is None and current is not None and \
            request_id is not None and current.request_id == request_id:
        global_request_id = current.global_request_id
    return {'project_id': project_id, 'roles': list(roles),
            'request_id': request_id or 'req-' + str(uuid.uuid4()),
            'global_request_id': global_request_id}


def set_current(request_id, global_request_id=None):
    """Make ``request_id`` this thread's current request (for logs and for
    :func:`make`) until another one is set: each API request and each RPC
    message sets its own, so none outlives the next."""
    oslo_context.RequestContext(request_id=request_id,
                                global_request_id=global_request_id,
                                overwrite=True)


class RequestIdFilter(logging.Filter):
    """Adds ``%(request_ids)s`` to each record: the thread's current request
    id, then the global one if any (``req-A req-B``), or ``-``."""

    def filter(self, record):
        current = oslo_context.get_current()
        ids = []
        if current is not None and current.request_id:
            ids.append(current.request_id)
            if current.global_request_id:
                ids.append(current.global_request_id)
        record.request_ids = ' '.join(ids) or '-'
        return True
