"""Which host an agent's message comes from, proven by the host's key.

The conductor accepts a report, a progress report or a heartbeat only
from the host it speaks for: a signed message (``auth``, made by
``livesnap.hostkeys.sign`` with the sending host's key) must verify with a
key of that host in ``[conductor] host_keys_dir``, name that host in its
arguments, and, for an operation, be from the host the operation's work
was sent to (``operations.host``).  Anything else is refused before it
changes anything, and recorded as a security event: an ERROR log line
starting ``SECURITY host_auth_refused``, the counter
``livesnap_host_auth_refused_total`` (by method and reason) and the
notification ``livesnap.host_auth.refused.error``.

Unsigned messages (agents without a key, RPC 1.1 and older) are accepted
as before unless ``[conductor] require_host_keys`` is set; the conductor
warns once that it cannot tell who sends them.
"""

import collections
import logging
import os
import threading
import time

from oslo_config import cfg
import prometheus_client
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import notifications
from livesnap import hostkeys

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

#: The marker that starts every refusal's log line, for log alerts.
MARKER = 'SECURITY host_auth_refused'
EVENT_TYPE = 'livesnap.host_auth.refused.error'

REFUSED = prometheus_client.Counter(
    'livesnap_host_auth_refused', 'Agent messages refused because they '
    'did not prove the host they speak for, by method and reason.',
    ['method', 'reason'])

_lock = threading.Lock()
_warned = set()
#: nonce -> expiry (monotonic seconds) of the signed messages seen
_seen = collections.OrderedDict()
#: host -> (file stamp, keys)
_keys = {}


def reset():
    """Forget the warnings given, the nonces seen and the keys read."""
    with _lock:
        _warned.clear()
        _seen.clear()
        _keys.clear()


def _keys_of(host):
    """The keys ``[conductor] host_keys_dir`` holds for ``host`` (read
    again when the file changes), or None.
    """
    directory = CONF.conductor.host_keys_dir
    if not directory or not hostkeys.HOST_NAME.match(host):
        return None
    path = os.path.join(directory, host)
    try:
        st = os.stat(path)
    except OSError:
        return None
    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _lock:
        known = _keys.get(host)
        if known is not None and known[0] == stamp:
            return known[1]
    try:
        keys = hostkeys.read(path)
    except hostkeys.KeyFileError as exc:
        LOG.error('Host key file of %(host)s unusable: %(error)s',
                  {'host': host, 'error': exc})
        return None
    with _lock:
        _keys[host] = (stamp, keys)
    return keys


def has_key(host):
    """Whether ``[conductor] host_keys_dir`` holds a usable key for
    ``host``.
    """
    return _keys_of(host) is not None


def _first_use(nonce, window):
    """True the first time this conductor sees ``nonce`` in the window."""
    now = time.monotonic()
    with _lock:
        while _seen:
            oldest, expiry = next(iter(_seen.items()))
            if expiry > now:
                break
            del _seen[oldest]
        if nonce in _seen:
            return False
        _seen[nonce] = now + 2 * window
        return True


def _operation_host(operation_id):
    with db.reader() as c:
        return c.execute(
            sa.select(models.Operation.host)
            .where(models.Operation.id == operation_id)).scalar()


def _warn_once(key, message):
    with _lock:
        if key in _warned:
            return
        _warned.add(key)
    LOG.warning(message)


def refuse(method, reason, claimed, signed=None, operation_id=None,
           detail=''):
    """Record a refused message as a security event."""
    LOG.error('%(marker)s: %(method)s claiming host %(claimed)s '
              '(signed by %(signed)s, operation %(op)s) refused: '
              '%(reason)s %(detail)s',
              {'marker': MARKER, 'method': method, 'claimed': claimed,
               'signed': signed, 'op': operation_id, 'reason': reason,
               'detail': detail})
    try:
        REFUSED.labels(method=method, reason=reason).inc()
    except Exception:
        LOG.exception('Counting a refused message failed')
    notifications.emit(EVENT_TYPE, {
        'livesnap_object.name': 'HostAuthPayload',
        'livesnap_object.namespace': notifications.NAMESPACE,
        'livesnap_object.version': '1.0',
        'livesnap_object.data': {
            'method': method, 'reason': reason, 'claimed_host': claimed,
            'signed_host': signed, 'operation_id': operation_id}})
    return False


def check(method, args, auth, claimed, operation_id=None):
    """Whether the message may be acted on.

    :param args: the message's arguments as received, less ``auth``.
    :param auth: its signature, or None for an unsigned message.
    :param claimed: the host it speaks for (its ``host`` argument), or None
        if it names none (RPC 1.0 reports and progress).
    :param operation_id: the operation it is about, if any: it must be one
        the signing host was sent.
    :returns: True to go on; False if refused (and recorded).
    """
    if auth is None:
        if CONF.conductor.require_host_keys:
            return refuse(method, 'unsigned', claimed,
                          operation_id=operation_id)
        _warn_once(None, 'Agents\' messages are accepted unsigned: the '
                   'conductor cannot tell which host sends them. Give '
                   'each agent a host key and set [conductor] '
                   'require_host_keys (docs/security.md).')
        if isinstance(claimed, str) and _keys_of(claimed) is not None:
            _warn_once(claimed, 'The agent on %s has a key in [conductor] '
                       'host_keys_dir but sends unsigned messages: give it '
                       'its [agent] host_key_file.' % claimed)
        return True
    signer = auth.get('host') if isinstance(auth, dict) else None
    if not isinstance(signer, str):
        return refuse(method, 'malformed', claimed,
                      operation_id=operation_id)
    keys = _keys_of(signer)
    if keys is None:
        return refuse(method, 'unknown_host', claimed, signer, operation_id,
                      'no key for the signing host in [conductor] '
                      'host_keys_dir')
    window = CONF.conductor.host_auth_window
    try:
        hostkeys.verify(keys, auth, method, args, window)
    except hostkeys.BadSignature as exc:
        return refuse(method, exc.reason, claimed, signer, operation_id,
                      str(exc))
    if claimed is not None and claimed != signer:
        return refuse(method, 'wrong_host', claimed, signer, operation_id,
                      'signed by another host')
    if operation_id is not None:
        owner = _operation_host(operation_id)
        if owner is not None and owner != signer:
            return refuse(method, 'not_its_operation', claimed, signer,
                          operation_id, 'the operation was sent to %s'
                          % owner)
    if not _first_use(auth['nonce'], window):
        return refuse(method, 'replayed', claimed, signer, operation_id)
    return True
