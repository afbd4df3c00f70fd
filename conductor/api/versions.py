"""API microversions: ``OpenStack-API-Version: livesnap X.Y``.

A request without the header gets the minimum version (the nova rule);
``latest`` gets the maximum; a version outside ``MIN_VERSION`` …
``MAX_VERSION`` or one that cannot be parsed is answered 406.  Every
response says the version it was served at, in ``OpenStack-API-Version``,
with ``Vary: OpenStack-API-Version``.

The version a request is served at is in its WSGI environ
(:data:`ENVIRON_KEY`) and on the caller's context that every controller
gets (``creds.api_version``, a ``(major, minor)`` tuple), so a controller
answers by version with e.g. ``if creds.api_version >= (1, 2):``.

History:

* 1.0 — the API as it was before microversions.
* 1.1 — lists take ``limit``, ``marker``, ``sort_key`` and ``sort_dir``
  and answer ``<resource>_links`` with a ``next`` link.  (Accepted at every
  version so that existing clients can page; 1.1 is where it is
  documented.)
"""

import microversion_parse

SERVICE_TYPE = 'livesnap'
HEADER = 'OpenStack-API-Version'
MIN_VERSION = (1, 0)
MAX_VERSION = (1, 1)

#: The request's environ key of the ``(major, minor)`` it is served at.
ENVIRON_KEY = 'livesnap.api_version'


class NotAcceptable(Exception):
    """The requested version is not one this API serves."""


def _text(version):
    return '%d.%d' % version


def negotiate(headers):
    """The ``(major, minor)`` the request asks for.

    :param headers: the request's headers (a case-insensitive mapping).
    :raises: NotAcceptable
    """
    try:
        wanted = microversion_parse.get_version(
            headers, service_type=SERVICE_TYPE)
    except (ValueError, TypeError) as exc:
        raise NotAcceptable('Invalid %s header: %s' % (HEADER, exc))
    if wanted is None:
        return MIN_VERSION
    if wanted.strip().lower() == 'latest':
        return MAX_VERSION
    try:
        major, minor = wanted.strip().split('.')
        version = (int(major), int(minor))
    except ValueError:
        raise NotAcceptable('Invalid %s header: %r' % (HEADER, wanted[:32]))
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise NotAcceptable('Version %s is not supported: this API serves '
                            '%s to %s.' % (wanted[:32], _text(MIN_VERSION),
                                           _text(MAX_VERSION)))
    return version


def set_headers(resp, version):
    """Name the version served in ``resp``."""
    resp.headers[HEADER] = '%s %s' % (SERVICE_TYPE, _text(version))
    vary = resp.headers.get('Vary')
    resp.headers['Vary'] = '%s, %s' % (vary, HEADER) if vary else HEADER


def document(req):
    """The version document of ``GET /`` and ``GET /v1``."""
    return {'versions': [{
        'id': 'v1.0',
        'status': 'CURRENT',
        'min_version': _text(MIN_VERSION),
        'version': _text(MAX_VERSION),
        'links': [{'rel': 'self', 'href': req.host_url + '/v1'}],
    }]}
