"""Per-host signing keys: an agent proves which host it speaks for.

Every agent shares the deployment's broker user, and oslo.messaging's
rabbit driver neither sets RabbitMQ's validated ``user_id`` property on
what it sends nor hands it to the receiver's endpoints, so the broker
cannot say who sent a message.  Instead each host has a secret of its own
(``[agent] host_key_file``), which the conductors know too (``[conductor]
host_keys_dir``, one file per host).  The agent signs every message it
casts to the conductor: HMAC-SHA256 over a canonical serialization of the
method name, its arguments (the host name among them), the signing host, a
timestamp and a random nonce.  The conductor recomputes it with the key of
the host named in the signature and refuses a message whose signature does
not match, whose host is not the one it speaks for, or whose timestamp is
outside ``[conductor] host_auth_window`` (bounding replays; within the
window each conductor refuses a nonce it has already seen).

A key file holds one key per line, in hex (64 digits for 32 bytes); blank
lines and lines starting with ``#`` are ignored.  The agent signs with the
first; the conductor accepts any, so a key is rotated by adding the new one
on the conductors, then giving it to the agent, then removing the old one
(docs/security.md).
"""

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time

#: Bytes of a key made by :func:`generate`.
KEY_BYTES = 32
#: Version of the signature format, signed with the rest.
FORMAT = 1
#: A host name that may name a key file: no path separators, no leading dot.
HOST_NAME = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$')


class KeyFileError(Exception):
    """A key file that cannot be read or holds no valid key."""


class BadSignature(Exception):
    """A signature that does not prove what it claims; ``reason`` is a
    short, stable word for logs and metrics.
    """

    def __init__(self, reason, detail=''):
        super().__init__('%s%s' % (reason, ': ' + detail if detail else ''))
        self.reason = reason


def generate():
    """A new random key, as the hex text a key file holds."""
    return secrets.token_hex(KEY_BYTES)


def parse(text):
    """The keys in a key file's text, in order.

    :raises: KeyFileError if a line is not hex or none is given.
    """
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        try:
            key = bytes.fromhex(line)
        except ValueError:
            raise KeyFileError('a key line is not hexadecimal')
        if len(key) < 16:
            raise KeyFileError('a key is shorter than 16 bytes')
        keys.append(key)
    if not keys:
        raise KeyFileError('no key')
    return keys


def read(path):
    """The keys in the file at ``path``.

    :raises: KeyFileError (also for a file that cannot be read).
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise KeyFileError('cannot read %s: %s' % (path, exc))
    try:
        return parse(text)
    except KeyFileError as exc:
        raise KeyFileError('%s: %s' % (path, exc))


def canonical(method, args, host, timestamp, nonce):
    """The bytes a signature covers: sorted-key, compact JSON, so the same
    message serializes the same after its JSON trip over the bus.
    """
    return json.dumps({'v': FORMAT, 'method': method, 'args': args,
                       'host': host, 'ts': timestamp, 'nonce': nonce},
                      sort_keys=True, separators=(',', ':'),
                      ensure_ascii=True, allow_nan=False).encode('ascii')


def _mac(key, data):
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign(key, host, method, args, now=None):
    """The ``auth`` argument of a message from ``host``.

    :param args: the message's other arguments, as sent.
    """
    timestamp = round(time.time() if now is None else now, 3)
    nonce = secrets.token_hex(16)
    return {'v': FORMAT, 'host': host, 'ts': timestamp, 'nonce': nonce,
            'sig': _mac(key, canonical(method, args, host, timestamp,
                                       nonce))}


def verify(keys, auth, method, args, window, now=None):
    """Check ``auth`` against ``keys`` (the signing host's keys).

    :returns: the host the signature proves.
    :raises: BadSignature with reason ``malformed``, ``bad_signature``
        (wrong key or anything changed) or ``expired`` (timestamp more than
        ``window`` seconds away from ``now``).
    """
    if not isinstance(auth, dict) or auth.get('v') != FORMAT:
        raise BadSignature('malformed', 'unknown signature format')
    host, timestamp = auth.get('host'), auth.get('ts')
    nonce, sig = auth.get('nonce'), auth.get('sig')
    if not (isinstance(host, str) and isinstance(nonce, str)
            and isinstance(sig, str)
            and isinstance(timestamp, (int, float))
            and not isinstance(timestamp, bool)):
        raise BadSignature('malformed', 'missing field')
    try:
        data = canonical(method, args, host, timestamp, nonce)
    except (TypeError, ValueError):
        raise BadSignature('malformed', 'arguments not serializable')
    if not any(hmac.compare_digest(_mac(key, data), sig) for key in keys):
        raise BadSignature('bad_signature')
    now = time.time() if now is None else now
    if abs(now - timestamp) > window:
        raise BadSignature('expired', '%.0f s old' % (now - timestamp))
    return host


class Signer(object):
    """Signs an agent's messages with its host's key file, read again when
    the file changes (a rotated key needs no restart).
    """

    def __init__(self, host, path):
        self.host = host
        self.path = path
        self._lock = threading.Lock()
        self._stamp = None
        self._key = None
        self._load()

    def _load(self):
        """:raises: KeyFileError if the file cannot be read or holds no
            key.
        """
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise KeyFileError('cannot read %s: %s' % (self.path, exc))
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._key = read(self.path)[0]
            self._stamp = stamp
        return self._key

    def sign(self, method, args):
        with self._lock:
            try:
                key = self._load()
            except KeyFileError:
                # Keep signing with the key in hand while a rotation
                # rewrites the file.
                key = self._key
        return sign(key, self.host, method, args)
