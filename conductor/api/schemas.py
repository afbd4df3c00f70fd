"""JSON schemas of the request bodies; names, sizes and counts bounded."""

_NAME = {'type': 'string', 'minLength': 1, 'maxLength': 255,
         'pattern': r'^[^\x00-\x1f\x7f]+$'}
_ID = {'type': 'string', 'minLength': 1, 'maxLength': 64,
       'pattern': r'^[A-Za-z0-9_.-]+$'}
_DISK_NAME = {'type': 'string', 'minLength': 1, 'maxLength': 64,
              'pattern': r'^[A-Za-z0-9_.-]+$'}
_PATH = {'type': 'string', 'minLength': 2, 'maxLength': 1024,
         'pattern': r'^/[^\x00]*$'}

server_create = {
    'type': 'object',
    'properties': {
        'server': {
            'type': 'object',
            'properties': {
                'id': _ID,
                'name': _NAME,
                'project_id': _ID,
                'host': {'type': 'string', 'minLength': 1, 'maxLength': 255,
                         'pattern': r'^[A-Za-z0-9_.-]+$'},
                'qmp_socket': {'anyOf': [_PATH, {'type': 'null'}]},
                'disks': {
                    'type': 'array', 'minItems': 1, 'maxItems': 16,
                    'items': {
                        'type': 'object',
                        'properties': {'name': _DISK_NAME, 'path': _PATH},
                        'required': ['name', 'path'],
                        'additionalProperties': False,
                    },
                },
            },
            'required': ['id', 'name', 'project_id', 'host', 'disks'],
            'additionalProperties': False,
        },
    },
    'required': ['server'],
    'additionalProperties': False,
}

snapshot_create = {
    'type': 'object',
    'properties': {
        'snapshot': {
            'type': 'object',
            'properties': {'name': _NAME, 'disk': _DISK_NAME},
            'required': ['name', 'disk'],
            'additionalProperties': False,
        },
    },
    'required': ['snapshot'],
    'additionalProperties': False,
}

empty_or_null = {'type': ['object', 'null'], 'maxProperties': 0}
