"""``livesnap-manage``: operator commands run beside the conductor.

    livesnap-manage --config-file /etc/livesnap/livesnap.conf db sync
    livesnap-manage --config-file ... audit [--host H] [--repair] [--json]
    livesnap-manage --config-file ... host key create HOST [--output F]
                                                           [--rotate]

``audit`` asks each host's agent over the message bus, so it needs the
deployment's shared bus (RabbitMQ); with the in-memory bus only a process
running the agent itself can reach it.  Exit status: 0 when no drift was
found (or everything found was repaired), 1 otherwise.

``host key create`` makes a new secret key for the agent on HOST, writes
it to ``[conductor] host_keys_dir``/HOST (with ``--rotate``, beside the
keys already there, so both are accepted until the old line is removed)
and to ``--output`` (the agent's ``[agent] host_key_file``; else it is
printed), both readable by their owner only (docs/security.md).
"""

import json
import os
import sys

from oslo_config import cfg

from conductor.db import api as db
from livesnap import hostkeys
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
    host = subparsers.add_parser(
        'host', help='Hosts\' keys: host key create HOST.')
    host.add_argument('what', choices=['key'])
    host.add_argument('action', choices=['create'])
    host.add_argument('hostname',
                      help='The host (its agent\'s [agent] host).')
    host.add_argument('--output',
                      help='Write the key here (the agent\'s [agent] '
                           'host_key_file) instead of printing it.')
    host.add_argument('--rotate', action='store_true',
                      help='Add a key beside the host\'s current ones.')


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
    if command.name == 'host':
        return _create_host_key(command)
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


def _write_private(path, text, append=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT
                 | (os.O_APPEND if append else os.O_TRUNC), 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(text)


def _create_host_key(command):
    name = command.hostname
    if not hostkeys.HOST_NAME.match(name):
        print('Not a host name usable as a file name: %r' % name,
              file=sys.stderr)
        return 2
    directory = CONF.conductor.host_keys_dir
    if not directory:
        print('[conductor] host_keys_dir is not set', file=sys.stderr)
        return 2
    path = os.path.join(directory, name)
    if os.path.exists(path) and not command.rotate:
        print('%s already has a key in %s; --rotate adds another'
              % (name, path), file=sys.stderr)
        return 1
    os.makedirs(directory, mode=0o700, exist_ok=True)
    key = hostkeys.generate()
    # The new key goes first: the conductor accepts every line, the agent
    # signs with the first line of its own file.
    old = ''
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    _write_private(path, key + '\n' + old)
    if command.output:
        _write_private(command.output, key + '\n')
        print('Key of %s written to %s and %s' % (name, path,
                                                   command.output))
    else:
        print(key)
    return 0


if __name__ == '__main__':
    sys.exit(main())
