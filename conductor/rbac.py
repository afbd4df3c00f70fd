"""Authorisation rules of the REST API (oslo.policy).

The rules live here with their defaults; an operator overrides any of them
in the policy file (``[oslo_policy] policy_file``, ``policy.yaml`` by
default; a sample is generated into ``etc/livesnap/policy.yaml.sample``).

The defaults are OpenStack's secure defaults (the personas of Keystone's
default roles, as nova and cinder have them):

* ``reader`` may read its own project's servers, snapshots and operations;
* ``member`` may also create, delete, revert and protect snapshots and
  manage snapshot policies in its project;
* ``admin`` may do everything: register servers, list hosts, act on every
  project, see host details, start operations without the rate limit.

Keystone's default role implications (admin implies member implies reader)
are applied to every token's roles (see ``conductor.api.auth``), so a
``member`` token reads too.

Three kinds of question are asked of the policy:

* ``livesnap:all_projects``: may the caller see and act on every project's
  objects?  If not, every lookup is filtered to the caller's project, so
  another project's object is *not found* (404), exactly like one that does
  not exist: existence never leaks.
* the action's own rule (e.g. ``livesnap:snapshot:delete``), checked with
  the object's ``project_id`` as target.  A refusal answers 403 to the
  object's owner, with a message that says what was refused and why, and
  404 to anyone else (see :func:`authorize`).
* ``livesnap:host_details``: may the caller see where an object lives on
  its host (QMP socket, image paths, host names)?  If not, the views leave
  those out (``conductor.api.views``).
"""

import os
import time

from oslo_config import cfg
from oslo_policy import opts as policy_opts
from oslo_policy import policy

from conductor import exception

CONF = cfg.CONF

# Register [oslo_policy] early, so tests and the config generator see it.
policy_opts.set_defaults(CONF)

ADMIN = 'rule:admin_api'
READER = 'rule:project_reader_or_admin'
MEMBER = 'rule:project_member_or_admin'

_SERVERS = '/v1/servers'
_SERVER = '/v1/servers/{server_id}'
_SNAPSHOTS = '/v1/servers/{server_id}/snapshots'
_SNAPSHOT = '/v1/snapshots/{snapshot_id}'
_OPERATIONS = '/v1/operations'
_OPERATION = '/v1/operations/{operation_id}'
_POLICIES = '/v1/policies'
_POLICY = '/v1/policies/{policy_id}'

rules = [
    policy.RuleDefault('admin_api', 'role:admin',
                       description='Who is an administrator.'),
    policy.RuleDefault('project_reader',
                       'role:reader and project_id:%(project_id)s',
                       description='A reader of the project that owns the '
                                   'object.'),
    policy.RuleDefault('project_member',
                       'role:member and project_id:%(project_id)s',
                       description='A member of the project that owns the '
                                   'object.'),
    policy.RuleDefault('project_reader_or_admin',
                       'rule:admin_api or rule:project_reader',
                       description='An administrator, or a reader of the '
                                   'project that owns the object.'),
    policy.RuleDefault('project_member_or_admin',
                       'rule:admin_api or rule:project_member',
                       description='An administrator, or a member of the '
                                   'project that owns the object.'),
    policy.RuleDefault('admin_or_owner',
                       'rule:admin_api or project_id:%(project_id)s',
                       description='An administrator, or anyone with any '
                                   'role in the project that owns the '
                                   'object. Not used by the defaults any '
                                   'more; kept for policy files that refer '
                                   'to it.'),
    policy.DocumentedRuleDefault(
        'livesnap:all_projects', ADMIN,
        'See and act on the servers, snapshots and operations of every '
        'project. Anyone else only ever finds their own project\'s.',
        [{'method': 'GET', 'path': _SERVERS},
         {'method': 'GET', 'path': _OPERATIONS}]),
    policy.DocumentedRuleDefault(
        'livesnap:host_details', ADMIN,
        'See where an object lives on its host: a server\'s host and QMP '
        'socket, its disks\' active images, an operation\'s host, its '
        'steps\' details, and file paths and host names in errors. Anyone '
        'else sees ids, names, sizes, states, step names, timings and '
        'pause figures, with paths in errors replaced by <path>.',
        [{'method': 'GET', 'path': _SERVER},
         {'method': 'GET', 'path': _OPERATION}]),
    policy.DocumentedRuleDefault(
        'livesnap:host:list', ADMIN,
        'List the hypervisor hosts with their agents\' liveness.',
        [{'method': 'GET', 'path': '/v1/hosts'}]),
    policy.DocumentedRuleDefault(
        'livesnap:host:domain:list', ADMIN,
        'List the libvirt domains a host\'s agent sees that no server is '
        'registered for.',
        [{'method': 'GET', 'path': '/v1/hosts/{host}/domains'}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:create', ADMIN,
        'Register a server and its disks with livesnap.',
        [{'method': 'POST', 'path': _SERVERS}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:delete', ADMIN,
        'Unregister a server: delete its snapshots (merged into its live '
        'layers) and its records; keep_snapshots=true and force=true '
        'remove the records only.',
        [{'method': 'DELETE', 'path': _SERVER}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:list', READER,
        'List servers.', [{'method': 'GET', 'path': _SERVERS}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:get', READER,
        'Show a server and its disks.', [{'method': 'GET', 'path': _SERVER}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:list', READER,
        'List the snapshots of a server.',
        [{'method': 'GET', 'path': _SNAPSHOTS}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:list:include_deleted', READER,
        'See logically deleted snapshots: list them (include_deleted=true) '
        'and show one (status "deleted").',
        [{'method': 'GET', 'path': _SNAPSHOTS + '?include_deleted=true'},
         {'method': 'GET', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:create', MEMBER,
        'Take an online snapshot of a disk of a server.',
        [{'method': 'POST', 'path': _SNAPSHOTS}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:get', READER,
        'Show a snapshot.', [{'method': 'GET', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot_group:create', MEMBER,
        'Snapshot several disks of a server in one pause (a group).',
        [{'method': 'POST', 'path': _SERVER + '/snapshot-groups'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot_group:get', READER,
        'List and show snapshot groups.',
        [{'method': 'GET', 'path': _SERVER + '/snapshot-groups'},
         {'method': 'GET', 'path': '/v1/snapshot-groups/{group_id}'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot_group:delete', MEMBER,
        'Delete every snapshot of a group.',
        [{'method': 'DELETE', 'path': '/v1/snapshot-groups/{group_id}'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot_group:revert', MEMBER,
        'Revert every disk of a shut-off server to a group.',
        [{'method': 'POST',
          'path': '/v1/snapshot-groups/{group_id}/revert'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:delete', MEMBER,
        'Delete a snapshot (physically, by merging, or logically).',
        [{'method': 'DELETE', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:revert', MEMBER,
        'Revert a disk of a shut-off server to a snapshot.',
        [{'method': 'POST', 'path': _SNAPSHOT + '/revert'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:clone', MEMBER,
        'Make a new disk from a snapshot (a full copy, or a layer on it) '
        'for a server of the same project.',
        [{'method': 'POST', 'path': _SNAPSHOT + '/clone'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:update', MEMBER,
        'Protect a snapshot (it cannot be deleted, and no snapshot policy '
        'prunes it) or unprotect it.',
        [{'method': 'PATCH', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:list', READER,
        'List snapshot policies (schedules with retention).',
        [{'method': 'GET', 'path': _POLICIES}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:get', READER,
        'Show a snapshot policy with its last and next run.',
        [{'method': 'GET', 'path': _POLICY}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:create', MEMBER,
        'Attach a snapshot policy to a server.',
        [{'method': 'POST', 'path': _POLICIES}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:update', MEMBER,
        'Change, enable or disable a snapshot policy.',
        [{'method': 'PATCH', 'path': _POLICY}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:delete', MEMBER,
        'Delete a snapshot policy (its snapshots stay, as the tenant\'s '
        'own).',
        [{'method': 'DELETE', 'path': _POLICY}]),
    policy.DocumentedRuleDefault(
        'livesnap:policy:run:list', READER,
        'List the runs of a snapshot policy: outcome, reason, snapshot '
        'made, snapshots pruned.',
        [{'method': 'GET', 'path': _POLICY + '/runs'}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:list', READER,
        'List operations.', [{'method': 'GET', 'path': _OPERATIONS}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:get', READER,
        'Show an operation with its steps and pause time.',
        [{'method': 'GET', 'path': _OPERATION}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:cancel', ADMIN,
        'Cancel a merge that is still copying (it fails with "cancelled" '
        'and leaves the images as they were).',
        [{'method': 'POST', 'path': _OPERATION + '/cancel'}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:unlimited', ADMIN,
        'Start snapshot operations without the per-project rate limit '
        '([api] operations_per_minute).',
        [{'method': 'POST', 'path': _SNAPSHOTS},
         {'method': 'DELETE', 'path': _SNAPSHOT},
         {'method': 'POST', 'path': _SNAPSHOT + '/revert'},
         {'method': 'POST', 'path': _SNAPSHOT + '/clone'}]),
]

#: What each rule lets one do, for the message of a refusal.
ACTIONS = {
    'livesnap:host:list': 'list hosts',
    'livesnap:host:domain:list': 'list the domains of hosts',
    'livesnap:server:create': 'register servers',
    'livesnap:server:delete': 'unregister servers',
    'livesnap:server:list': 'list servers',
    'livesnap:server:get': 'show servers',
    'livesnap:snapshot:list': 'list snapshots',
    'livesnap:snapshot:list:include_deleted': 'see deleted snapshots',
    'livesnap:snapshot:create': 'create snapshots',
    'livesnap:snapshot:get': 'show snapshots',
    'livesnap:snapshot:delete': 'delete snapshots',
    'livesnap:snapshot:revert': 'revert disks to snapshots',
    'livesnap:snapshot_group:create': 'create snapshot groups',
    'livesnap:snapshot_group:get': 'see snapshot groups',
    'livesnap:snapshot_group:delete': 'delete snapshot groups',
    'livesnap:snapshot_group:revert': 'revert disks to snapshot groups',
    'livesnap:snapshot:clone': 'clone snapshots into new disks',
    'livesnap:snapshot:update': 'protect or unprotect snapshots',
    'livesnap:policy:list': 'list snapshot policies',
    'livesnap:policy:get': 'show snapshot policies',
    'livesnap:policy:create': 'create snapshot policies',
    'livesnap:policy:update': 'change snapshot policies',
    'livesnap:policy:delete': 'delete snapshot policies',
    'livesnap:policy:run:list': 'list snapshot policy runs',
    'livesnap:operation:list': 'list operations',
    'livesnap:operation:get': 'show operations',
    'livesnap:operation:cancel': 'cancel operations',
}

_ENFORCER = None

#: Seconds between two looks at the policy file and policy directories.
#: oslo.policy looks on every check (a ``find_file`` over the config
#: directories, then a ``stat``): a tenth of a read request's CPU.  A
#: changed, added or removed policy file takes effect within this time.
RELOAD_INTERVAL = 5.0

#: Policy decisions remembered between two loads of the rules.
_MAX_DECISIONS = 10000


class _Enforcer(policy.Enforcer):
    """An Enforcer that also works before the command line is parsed,
    and that looks at its files at most every :data:`RELOAD_INTERVAL`.

    oslo.policy looks the policy file up with ``CONF.find_file``, which
    raises until ``CONF()`` has run (the services run it; tests and
    embedding programs need not).  Then only an absolute ``policy_file``
    is read, and the defaults apply otherwise.
    """

    _next_load = 0.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._decisions = {}

    def load_rules(self, force_reload=False):
        now = time.monotonic()
        if force_reload or not self.rules or now >= self._next_load:
            super().load_rules(force_reload)
            self._next_load = now + RELOAD_INTERVAL
            self._decisions = {}

    def clear(self):
        super().clear()
        self._next_load = 0.0
        self._decisions = {}

    def decide(self, rule, target, creds):
        """``enforce(rule, target, creds)``, remembered until the rules
        are next loaded.

        ``target`` and ``creds`` are flat dicts of strings and lists of
        strings: the decision is a function of them and of the rules (an
        oslo.policy check costs tens of microseconds, most of it
        ``inspect.getfullargspec`` on every check object).
        """
        self.load_rules()
        decisions = self._decisions
        key = (rule, tuple(sorted(target.items())),
               tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                            for k, v in creds.items())))
        allowed = decisions.get(key)
        if allowed is None:
            allowed = bool(self.enforce(rule, target, creds))
            if len(decisions) >= _MAX_DECISIONS:
                decisions.clear()
            decisions[key] = allowed
        return allowed

    def _get_policy_path(self, path):
        try:
            return super()._get_policy_path(path)
        except cfg.NotInitializedError:
            if os.path.isabs(path) and os.path.exists(path):
                return path
            raise cfg.ConfigFilesNotFoundError([path])


def list_rules():
    """Entry point ``oslo.policy.policies = livesnap``."""
    return rules


def get_enforcer():
    """Entry point ``oslo.policy.enforcer = livesnap`` (the generators)."""
    return _get_enforcer()


def _get_enforcer():
    global _ENFORCER
    if _ENFORCER is None:
        enforcer = _Enforcer(CONF)
        enforcer.register_defaults(rules)
        _ENFORCER = enforcer
    return _ENFORCER


def reset():
    """Forget the enforcer (tests change the policy file with this)."""
    global _ENFORCER
    if _ENFORCER is not None:
        _ENFORCER.clear()
    _ENFORCER = None


def _creds(creds):
    return {'project_id': creds.project_id, 'roles': list(creds.roles),
            'user_id': getattr(creds, 'user_id', None)}


def check(creds, rule, project_id=None):
    """True if ``rule`` allows ``creds`` to act on ``project_id``'s object.

    ``project_id`` defaults to the caller's own project (for actions on no
    particular object, like listing).
    """
    target = {'project_id': project_id if project_id is not None
              else creds.project_id}
    return _get_enforcer().decide(rule, target, _creds(creds))


def scope(creds):
    """The project filter for the caller's lookups; None means all."""
    return None if check(creds, 'livesnap:all_projects') else \
        creds.project_id


def authorize(creds, rule, project_id=None):
    """Raise unless ``rule`` allows the action on ``project_id``'s object.

    :raises: Forbidden for the object's owner (they know it exists);
        NotFound for anyone else, so existence does not leak.
    """
    if check(creds, rule, project_id):
        return
    if project_id is None or project_id == creds.project_id:
        raise exception.Forbidden(refusal(creds, rule))
    raise exception.NotFound('The resource could not be found.')


def refusal(creds, rule):
    """The message of a 403: what was refused, to whom, and by which rule
    (an operator may have changed it), never what the caller cannot see.
    """
    roles = sorted(set(creds.roles))
    who = ('role%s %s' % ('s' if len(roles) > 1 else '', ', '.join(roles))
           if roles else 'no role')
    return ('Your token (%s in project %s) may not %s: refused by policy '
            'rule %s.' % (who, creds.project_id,
                          ACTIONS.get(rule, 'do this'), rule))
