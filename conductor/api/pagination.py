"""Pagination of the REST API's lists, the nova/cinder way.

Every list takes ``limit`` (at most ``[api] max_page_size``, default
``[api] default_page_size``), ``marker`` (the id of the last item of the
previous page; an unknown one is 400), ``sort_key`` (one of the list's
keys in ``LISTS``) and ``sort_dir`` (``asc`` or ``desc``).  Without
``sort_key`` a list keeps its usual order.  When a page is full, the body
has ``<resource>_links: [{"rel": "next", "href": …}]``, the same URL with
``marker`` set to the page's last id; its scheme and host are the
request's as seen by the client (``http_proxy_to_wsgi`` applies
``X-Forwarded-Proto``/``X-Forwarded-Host``).

A list is paginated by naming it in ``LISTS``: ``(controller, action):
(collection key, id key, sort keys)``; its query string schema gets the
four parameters from :func:`query_schema`.
"""

import urllib.parse

from oslo_config import cfg

from conductor import exception

CONF = cfg.CONF

#: (controller, action) -> (collection key, id key, sortable keys).
LISTS = {
    ('servers', 'index'): ('servers', 'id', ('id', 'name', 'created_at')),
    ('snapshots', 'index'): ('snapshots', 'id',
                             ('id', 'name', 'created_at', 'status')),
    ('operations', 'index'): ('operations', 'id',
                              ('id', 'action', 'status', 'created_at')),
    ('hosts', 'index'): ('hosts', 'name', ('name', 'state')),
    # What the host's agent lists (an RPC call), paged here like the rest.
    ('hosts', 'domains'): ('domains', 'uuid', ('name', 'uuid', 'running')),
    ('snapshot_groups', 'index'): ('snapshot_groups', 'id',
                                   ('id', 'name', 'created_at')),
    ('policies', 'index'): ('policies', 'id', ('id', 'name', 'created_at')),
    ('policies', 'runs'): ('runs', 'id', ('id', 'status', 'created_at')),
}

PARAMS = ('limit', 'marker', 'sort_key', 'sort_dir')

#: The schemas of the parameters (also in openapi.yaml: PageLimit,
#: PageMarker, SortDir and one ...SortKey per list).
LIMIT = {'type': 'string', 'pattern': '^[0-9]{1,9}$'}
MARKER = {'type': 'string', 'minLength': 1, 'maxLength': 255}
SORT_DIR = {'type': 'string', 'enum': ['asc', 'desc']}


def sort_key_schema(sort_keys):
    return {'type': 'string', 'enum': list(sort_keys)}


def query_schema(key, base=None):
    """``base`` (a query string schema, or none) with the pagination
    parameters of the list ``key`` (in ``LISTS``) added.
    """
    base = base or {'type': 'object', 'additionalProperties': False}
    return dict(base, properties=dict(
        base.get('properties', {}), limit=LIMIT, marker=MARKER,
        sort_key=sort_key_schema(LISTS[key][2]), sort_dir=SORT_DIR))


def _limit(params):
    if params.get('limit') is None:
        return CONF.api.default_page_size
    limit = int(params['limit'])
    if limit < 1:
        raise exception.BadRequest('limit must be a positive integer.')
    return min(limit, CONF.api.max_page_size)


def _sort_value(item, key):
    # None sorts first; mixed types are compared as text.
    value = item.get(key)
    return (value is not None, '' if value is None else str(value))


def paginate(req, params, payload, spec):
    """Cut ``payload[collection]`` to the page ``params`` ask for and add
    the ``next`` link when the page is full.

    :param req: the request (for the link).
    :param spec: ``LISTS`` entry.
    :raises: BadRequest for an unknown marker or sort key, or a bad limit.
    """
    collection, id_key, sort_keys = spec
    items = payload[collection]
    limit = _limit(params)
    sort_key = params.get('sort_key')
    if sort_key is not None:
        if sort_key not in sort_keys:
            raise exception.BadRequest(
                'sort_key must be one of %s.' % ', '.join(sort_keys))
        items = sorted(items, key=lambda item: _sort_value(item, sort_key),
                       reverse=params.get('sort_dir') == 'desc')
    elif params.get('sort_dir') == 'desc':
        items = list(reversed(items))
    marker = params.get('marker')
    if marker is not None:
        ids = [item.get(id_key) for item in items]
        if marker not in ids:
            raise exception.BadRequest('Marker %s could not be found.'
                                       % marker[:64])
        items = items[ids.index(marker) + 1:]
    page = items[:limit]
    out = dict(payload)
    out[collection] = page
    if len(items) > limit and page:
        query = dict(params, marker=page[-1][id_key], limit=str(limit))
        href = '%s?%s' % (req.path_url, urllib.parse.urlencode(query))
        out['%s_links' % collection] = [{'rel': 'next', 'href': href}]
    return out
