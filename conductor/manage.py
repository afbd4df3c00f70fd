"""``livesnap-manage``: operator commands run beside the conductor.

    livesnap-manage --config-file /etc/livesnap/livesnap.conf db sync
    livesnap-manage --config-file ... audit [--host H] [--repair] [--json]

``audit`` asks each host's agent over the message bus, so it needs the
deployment's shared bus (RabbitMQ) and running agents; with the in-memory
bus only a process running the agent itself can reach it, so anywhere
else it is refused at once (rather than after the RPC timeout).  Exit
status: 0 when no drift was found (or everything found was repaired), 1
otherwise, 2 when the configuration cannot work (no configuration file,
the in-memory bus, a database with no schema).
"""

import json
import sys

from oslo_config import cfg

import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import migration
from livesnap import rpc
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
    try:
        common_service.require_config('livesnap-manage')
        if command.name == 'db':
            db.sync()
            print('Database schema is up to date.')
            return 0
        _check_audit_can_run()
    except common_service.ConfigurationError as exc:
        print('livesnap-manage: %s' % exc, file=sys.stderr)
        return common_service.EXIT_CONFIG
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


def _check_audit_can_run():
    """Refuse an audit that cannot work, before it waits for agents.

    :raises ConfigurationError: on the in-memory bus with no agent in this
        process, or on a database with no schema.
    """
    if (rpc.in_memory() and
            not rpc.serves_locally(rpc.AGENT_TOPIC)):
        raise common_service.ConfigurationError(
            'the audit asks the agents over the message bus, and '
            'transport_url is the in-memory bus (%s), which reaches no '
            'other process: set [DEFAULT] transport_url to the '
            'deployment\'s (rabbit://...) with --config-file, and run it '
            'where the agents are up' % rpc.DEFAULT_TRANSPORT_URL)
    try:
        revision = migration.current_revision(db.get_engine())
    except sa.exc.DBAPIError as exc:
        raise common_service.ConfigurationError(
            'cannot reach the database: %s' % (exc.orig,))
    if revision is None:
        raise common_service.ConfigurationError(
            'the database has no schema: run `livesnap-manage db sync` '
            'first')


if __name__ == '__main__':
    sys.exit(main())
