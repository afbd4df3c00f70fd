"""``livesnap-manage``: operator commands run beside the conductor.

    livesnap-manage --config-file /etc/livesnap/livesnap.conf db sync
    livesnap-manage --config-file ... audit [--host H] [--repair] [--json]

``audit`` asks each host's agent over the message bus, so it needs the
deployment's shared bus (RabbitMQ); with the in-memory bus only a process
running the agent itself can reach it.  Exit status: 0 when no drift was
found (or everything found was repaired), 1 otherwise.
"""

import json
import sys

from oslo_config import cfg

from conductor.db import api as db
from livesnap import service as common_service

CONF = cfg.CONF


def _add_commands(subparsers):
    sync = subparsers.add_parser('db', help='Database schema.')
    sync.add_argument('action', choices=['sync'])
    audit = subparsers.add_parser(
        'audit', help='Compare the database\'s trees with the qcow2 chains '
                      'on the hosts.')
    audit.add_argument('--host', action='append',
                       help='Audit only this host (repeatable).')
    audit.add_argument('--repair', action='store_true',
                       help='Fix what is safe: orphans, stale locks, stuck '
                            'snapshots.')
    audit.add_argument('--json', action='store_true',
                       help='Print the findings as JSON.')


_COMMAND = cfg.SubCommandOpt('command', title='Commands',
                             handler=_add_commands)


def main(argv=None):
    # Command-line options can only be registered before parsing; clear()
    # forgets an earlier parse (when embedded or tested), keeping options
    # and overrides.
    CONF.clear()
    CONF.register_cli_opt(_COMMAND)
    common_service.prepare('livesnap-manage', argv)
    command = CONF.command
    if command.name == 'db':
        db.sync()
        print('Database schema is up to date.')
        return 0
    from conductor import audit
    results = audit.audit(hosts=command.host, repair=command.repair)
    unresolved = sum(1 for findings in results.values() for f in findings
                     if not f.get('repaired'))
    if command.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        for host, findings in sorted(results.items()):
            print('%s: %s' % (host, 'no drift' if not findings
                              else '%d finding(s)' % len(findings)))
            for f in findings:
                print('  %-12s %s%s' % (f['kind'], f['detail'],
                                        ' [repaired]' if f.get('repaired')
                                        else ''))
    return 1 if unresolved else 0


if __name__ == '__main__':
    sys.exit(main())
