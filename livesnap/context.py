"""The request context carried by every RPC message.

A small dict is enough: who asked (project, roles) and a request id that
ties the API request, the conductor's decision and the agent's log lines
together.
"""

import uuid


def make(project_id=None, roles=(), request_id=None):
    return {'project_id': project_id, 'roles': list(roles),
            'request_id': request_id or 'req-' + str(uuid.uuid4())}
