"""The request context carried by every RPC message: oslo.context's.

:class:`RequestContext` is ``oslo_context.context.RequestContext``: who
asked (``project_id``, ``user_id``, ``roles``, ``is_admin``) and a request
id that ties the API request, the conductor's decision and the agent's log
lines together.  ``global_request_id`` is the id a caller (another
OpenStack service) sent in ``X-OpenStack-Request-ID``, kept so one request
can be followed across services.  It crosses RPC as ``to_dict()`` and is
rebuilt with ``from_dict()`` (``livesnap.rpc.ContextSerializer``).

Each thread's current request is kept by oslo.context (its thread-local
store): the API sets it for the request it serves (the caller's
credentials, ``conductor.api.auth.Credentials``), the RPC servers for the
message they dispatch, and :class:`RequestIdFilter` puts it on every log
line of that thread.
"""

import logging

from oslo_context import context as oslo_context


class RequestContext(oslo_context.RequestContext):
    """oslo.context's request context, and the API microversion.

    :param api_version: ``(major, minor)`` the API request is served at
        (``conductor.api.versions``), for controllers that answer
        differently by version; None outside the API.  It stays in the
        process (not in ``to_dict``).
    :param overwrite: make this the thread's current context.  False
        means never by being made (oslo.context would make it current
        when the thread has none): contexts made for the RPC calls of
        background work must not tag the thread's later log lines.
    """

    def __init__(self, api_version=None, overwrite=True, **kwargs):
        self._store_on_init = overwrite
        super().__init__(overwrite=overwrite, **kwargs)
        self._store_on_init = True
        self.api_version = api_version

    def update_store(self):
        """Make this the thread's current context (unless being made with
        ``overwrite=False``).
        """
        if self._store_on_init:
            super().update_store()


def make(project_id=None, roles=(), request_id=None, global_request_id=None):
    """A new RPC context; the thread's current one is left as it is.

    When ``request_id`` is the current request's own (an API request: the
    controllers pass only its request id), the caller's user, admin flag
    and global request id are taken from it.
    """
    current = oslo_context.get_current()
    user_id, is_admin = None, False
    if current is not None and request_id is not None and \
            current.request_id == request_id:
        if global_request_id is None:
            global_request_id = current.global_request_id
        user_id, is_admin = current.user_id, bool(current.is_admin)
    return RequestContext(project_id=project_id, roles=list(roles),
                          user_id=user_id, is_admin=is_admin,
                          request_id=request_id,
                          global_request_id=global_request_id,
                          overwrite=False)


def set_current(request_id, global_request_id=None):
    """Make ``request_id`` this thread's current request (for logs and for
    :func:`make`) until another one is set: each API request and each RPC
    message sets its own, so none outlives the next.
    """
    return RequestContext(request_id=request_id,
                          global_request_id=global_request_id,
                          overwrite=True)


class RequestIdFilter(logging.Filter):
    """Adds ``%(request_ids)s`` to each record: the thread's current request
    id, then the global one if any (``req-A req-B``), or ``-``.
    """

    def filter(self, record):
        current = oslo_context.get_current()
        ids = []
        if current is not None and current.request_id:
            ids.append(current.request_id)
            if current.global_request_id:
                ids.append(current.global_request_id)
        record.request_ids = ' '.join(ids) or '-'
        return True
