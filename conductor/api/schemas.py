"""JSON schemas of everything a request carries: bodies, query strings and
path parameters; names, sizes and counts bounded.

The OpenAPI document (``openapi.yaml``) holds the same schemas; a unit test
keeps the two equal.
"""

from livesnap import schema as _schema


def validate(instance, schema):
    """:raises: jsonschema.ValidationError (the most relevant one)."""
    error = _schema.first_error(instance, schema)
    if error is not None:
        raise error


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
                # the host end of the guest agent's virtio-serial channel
                'qga_socket': {'anyOf': [_PATH, {'type': 'null'}]},
                'disks': {
                    'type': 'array', 'minItems': 1, 'maxItems': 16,
                    'items': {
                        'type': 'object',
                        'properties': {'name': _DISK_NAME, 'path': _PATH},
                        'required': ['name', 'path'],
                        'additionalProperties': False,
                    },
                },
                'driver': {'enum': ['qemu', 'libvirt']},
                'domain': {'type': 'string', 'minLength': 1,
                           'maxLength': 255,
                           'pattern': r'^[^\x00-\x1f\x7f]+$'},
            },
            'required': ['id', 'name', 'project_id', 'host'],
            # QEMU: disks by path; libvirt: a domain, whose disks the
            # host's agent describes.
            'if': {'properties': {'driver': {'const': 'libvirt'}},
                   'required': ['driver']},
            'then': {'required': ['domain'],
                     'not': {'anyOf': [{'required': ['disks']},
                                       {'required': ['qmp_socket']}]}},
            'else': {'required': ['disks'],
                     'not': {'required': ['domain']}},
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
            'properties': {'name': _NAME, 'disk': _DISK_NAME,
                           'quiesce': {'enum': ['required', 'preferred',
                                                'off']}},
            'required': ['name', 'disk'],
            'additionalProperties': False,
        },
    },
    'required': ['snapshot'],
    'additionalProperties': False,
}

snapshot_group_create = {
    'type': 'object',
    'properties': {
        'snapshot_group': {
            'type': 'object',
            'properties': {
                'name': _NAME,
                # absent: every disk of the server
                'disks': {'type': 'array', 'items': _DISK_NAME,
                          'minItems': 1, 'maxItems': 64,
                          'uniqueItems': True},
                'quiesce': {'enum': ['required', 'preferred', 'off']},
            },
            'required': ['name'],
            'additionalProperties': False,
        },
    },
    'required': ['snapshot_group'],
    'additionalProperties': False,
}

snapshot_clone = {
    'type': 'object',
    'properties': {
        'clone': {
            'type': 'object',
            'properties': {
                'mode': {'enum': ['flat', 'linked']},
                'name': _NAME,
                'disk': _DISK_NAME,
                'server_id': {'type': 'string', 'minLength': 1,
                              'maxLength': 64},
            },
            'required': ['mode', 'disk'],
            'additionalProperties': False,
        },
    },
    'required': ['clone'],
    'additionalProperties': False,
}

_COUNT = {'type': 'integer', 'minimum': 0, 'maximum': 1000}
_RETENTION = {
    'type': 'object',
    'properties': {'keep_last': _COUNT, 'keep_hourly': _COUNT,
                   'keep_daily': _COUNT, 'keep_weekly': _COUNT,
                   'keep_monthly': _COUNT, 'keep_yearly': _COUNT},
    'additionalProperties': False,
}
_POLICY_FIELDS = {
    'name': {'type': 'string', 'minLength': 1, 'maxLength': 200,
             'pattern': r'^[^\x00-\x1f\x7f]+$'},
    'disks': {'anyOf': [{'type': 'array', 'minItems': 1, 'maxItems': 16,
                         'uniqueItems': True, 'items': _DISK_NAME},
                        {'type': 'null'}]},
    'interval': {'type': 'integer', 'minimum': 1, 'maximum': 31622400},
    'cron': {'type': 'string', 'minLength': 9, 'maxLength': 255,
             'pattern': r'^[0-9A-Za-z*/,? -]+$'},
    'timezone': {'type': 'string', 'minLength': 1, 'maxLength': 64,
                 'pattern': r'^[A-Za-z0-9_+/-]+$'},
    'retention': _RETENTION,
    'enabled': {'type': 'boolean'},
}

policy_create = {
    'type': 'object',
    'properties': {
        'policy': {
            'type': 'object',
            'properties': dict(_POLICY_FIELDS, server_id=_ID),
            'required': ['name', 'server_id', 'retention'],
            'oneOf': [{'required': ['interval']}, {'required': ['cron']}],
            'additionalProperties': False,
        },
    },
    'required': ['policy'],
    'additionalProperties': False,
}

policy_update = {
    'type': 'object',
    'properties': {
        'policy': {
            'type': 'object',
            'properties': _POLICY_FIELDS,
            'minProperties': 1,
            'not': {'required': ['interval', 'cron']},
            'additionalProperties': False,
        },
    },
    'required': ['policy'],
    'additionalProperties': False,
}

snapshot_update = {
    'type': 'object',
    'properties': {
        'snapshot': {
            'type': 'object',
            'properties': {'protected': {'type': 'boolean'}},
            'required': ['protected'],
            'additionalProperties': False,
        },
    },
    'required': ['snapshot'],
    'additionalProperties': False,
}

#: the body of an action that takes none: absent, ``{}`` or ``null``.
empty_or_null = {'type': ['object', 'null'], 'maxProperties': 0}

#: path parameters: an id that does not fit cannot exist (404).
path_id = _ID

_BOOL = {'type': 'string', 'enum': ['true', 'false', 'yes', 'no', '1', '0']}

#: query strings; each parameter at most once, unknown ones refused.
snapshot_index_query = {
    'type': 'object',
    'properties': {'include_deleted': _BOOL},
    'additionalProperties': False,
}

server_delete_query = {
    'type': 'object',
    'properties': {'keep_snapshots': _BOOL, 'force': _BOOL},
    'additionalProperties': False,
}

operation_index_query = {
    'type': 'object',
    'properties': {'server_id': _ID},
    'additionalProperties': False,
}

policy_index_query = {
    'type': 'object',
    'properties': {'server_id': _ID},
    'additionalProperties': False,
}

no_query = {'type': 'object', 'additionalProperties': False}


def truthy(value):
    """The meaning of a validated boolean query parameter."""
    return value in ('true', 'yes', '1')
