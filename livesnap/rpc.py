"""oslo.messaging plumbing shared by the conductor and the agents.

One transport per process, made from ``[DEFAULT] transport_url`` on the
global ``cfg.CONF``.  The embedded default ``kombu+memory:////`` needs no
broker but only reaches servers in the same process (the all-in-one
deployment and single-process tests); production uses ``rabbit://``.
"""

import threading
import warnings

from oslo_config import cfg
from oslo_context import context as oslo_context

# Importing oslo.messaging pulls in eventlet, which warns that it is
# deprecated; livesnap does not use eventlet (threading executor).
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    import oslo_messaging as messaging
    from oslo_messaging.notify import notifier as messaging_notifier
    from oslo_messaging.rpc import dispatcher as rpc_dispatcher
    from oslo_messaging import transport as messaging_transport

from kombu.transport import memory as kombu_memory

from livesnap import context

CONF = cfg.CONF

#: Seconds between polls of the in-memory bus when it is idle.
MEMORY_POLL_INTERVAL = 0.005


def _memory_polling_interval():
    """oslo.messaging sets the in-memory transport's polling interval to 0
    ("to speed up tests"), which makes every idle RPC server spin on a CPU
    core.  Clamp it to a few milliseconds: still a fast bus, no busy loop.
    """
    def getter(self):
        return self.__dict__.get('_livesnap_poll', MEMORY_POLL_INTERVAL)

    def setter(self, value):
        self.__dict__['_livesnap_poll'] = max(value or 0.0,
                                              MEMORY_POLL_INTERVAL)

    kombu_memory.Transport.polling_interval = property(getter, setter)


_memory_polling_interval()

DEFAULT_TRANSPORT_URL = 'kombu+memory:////'

AGENT_TOPIC = 'livesnap-agent'
CONDUCTOR_TOPIC = 'livesnap-conductor'

_TRANSPORT = None
_LOCK = threading.Lock()


def set_defaults():
    """Make the in-memory bus the default transport."""
    # The same option objects get_transport() registers; registering them
    # early lets the default be set before the transport exists.
    CONF.register_opts(messaging_transport._transport_opts)
    messaging.set_transport_defaults(control_exchange='livesnap')
    CONF.set_default('transport_url', DEFAULT_TRANSPORT_URL)
    # Versioned notifications go to their usual topic; none are sent until
    # [oslo_messaging_notifications] driver is set (messagingv2).
    CONF.register_opts(messaging_notifier._notifier_opts,
                       group='oslo_messaging_notifications')
    CONF.set_default('topics', ['versioned_notifications'],
                     group='oslo_messaging_notifications')


def get_transport():
    """Return this process's RPC transport, creating it on first use."""
    global _TRANSPORT
    with _LOCK:
        if _TRANSPORT is None:
            _TRANSPORT = messaging.get_rpc_transport(CONF)
        return _TRANSPORT


def cleanup():
    """Close the transport (tests and shutdown)."""
    global _TRANSPORT
    with _LOCK:
        if _TRANSPORT is not None:
            _TRANSPORT.cleanup()
            _TRANSPORT = None


def get_client(target, version_cap=None):
    return messaging.get_rpc_client(get_transport(), target,
                                    version_cap=version_cap,
                                    serializer=ContextSerializer())


class ContextSerializer(messaging.NoOpSerializer):
    """Sends a ``livesnap.context.RequestContext`` as its ``to_dict()``
    and rebuilds it with ``from_dict()`` in the server, where it becomes
    the current context of the thread that dispatches the message, so the
    endpoint's log lines carry its request ids.  A message of an older
    process (a dict of ``project_id``, ``roles``, ``request_id``,
    ``global_request_id``) reads the same.
    """

    def serialize_context(self, ctxt):
        if isinstance(ctxt, oslo_context.RequestContext):
            return ctxt.to_dict()
        return ctxt

    def deserialize_context(self, ctxt):
        if not isinstance(ctxt, dict):
            return ctxt
        return context.RequestContext.from_dict(ctxt)


def get_server(target, endpoints):
    """An RPC server with the (default) threading executor."""
    access_policy = rpc_dispatcher.DefaultRPCAccessPolicy
    return messaging.get_rpc_server(get_transport(), target, endpoints,
                                    access_policy=access_policy,
                                    serializer=ContextSerializer())


set_defaults()
