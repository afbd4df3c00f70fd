"""A rogue agent: a process on host ``rogue`` (with its own, valid host
key) that speaks for another host over the deployment's bus, as a
compromised hypervisor sharing the broker user could.

    python -m tests.functional.rogue_agent --config-file F \\
        --victim hv1 --operation OP --key-file rogue.key

It casts, each as a conductor's client would, heartbeats and reports for
the victim's host and operation: signed with its own key but naming the
victim, signed with its own key under the victim's name, signed as itself
but about the victim's operation, and unsigned.  Prints how many it sent.
"""

import argparse
import sys

from oslo_config import cfg

from livesnap import context
from livesnap import hostkeys
from livesnap import rpc
from livesnap import service as common_service

CONF = cfg.CONF


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument('--victim', required=True)
    parser.add_argument('--operation', required=True)
    parser.add_argument('--key-file', required=True)
    args, rest = parser.parse_known_args(argv)
    common_service.prepare('rogue-agent', rest)
    key = hostkeys.read(args.key_file)[0]
    client = rpc.get_client(rpc.messaging.Target(topic=rpc.CONDUCTOR_TOPIC,
                                                 version='1.2'))
    victim, op = args.victim, args.operation
    heartbeat = {'host': victim, 'info': {'rpc_version': '1.4',
                                          'version': 'rogue'}}
    report = {'operation_id': op, 'host': victim,
              'report': {'status': 'failed', 'error': 'rogue',
                         'steps': []}}
    progress = {'operation_id': op, 'progress': 99.0, 'steps': None,
                'host': victim}
    sent = []

    def cast(method, kwargs, auth_host=None, version='1.2'):
        kwargs = dict(kwargs)
        if auth_host is not None:
            kwargs['auth'] = hostkeys.sign(key, auth_host, method, kwargs)
        client.prepare(version=version).cast(context.make(), method,
                                             **kwargs)
        sent.append(method)

    for method, kwargs in (('heartbeat', heartbeat),
                           ('report_operation', report),
                           ('report_progress', progress)):
        cast(method, kwargs, auth_host='rogue')     # wrong_host
        cast(method, kwargs, auth_host=victim)      # bad_signature
        cast(method, kwargs, version='1.0' if method != 'report_operation'
             else '1.1')                             # unsigned
    # Signed as itself, truthfully, about the victim's operation.
    cast('report_operation', dict(report, host='rogue'), auth_host='rogue')
    rpc.cleanup()
    print(len(sent))
    return 0


if __name__ == '__main__':
    sys.exit(main())
