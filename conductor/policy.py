"""Authorisation rules of the REST API (oslo.policy).

The rules live here with their defaults; an operator overrides any of them
in the policy file (``[oslo_policy] policy_file``, ``policy.yaml`` by
default; a sample is generated into ``etc/livesnap/policy.yaml.sample``).

Two questions are asked of the policy for every request:

* ``livesnap:all_projects``: may the caller see and act on every project's
  objects?  If not, every lookup is filtered to the caller's project, so
  another project's object is *not found* (404), exactly like one that does
  not exist: existence never leaks.
* the action's own rule (e.g. ``livesnap:snapshot:delete``), checked with
  the object's ``project_id`` as target.  A refusal answers 403 to the
  object's owner and 404 to anyone else (see :func:`authorize`).
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
ADMIN_OR_OWNER = 'rule:admin_or_owner'

_SERVERS = '/v1/servers'
_SERVER = '/v1/servers/{server_id}'
_SNAPSHOTS = '/v1/servers/{server_id}/snapshots'
_SNAPSHOT = '/v1/snapshots/{snapshot_id}'

rules = [
    policy.RuleDefault('admin_api', 'role:admin',
                       description='Who is an administrator.'),
    policy.RuleDefault('admin_or_owner',
                       'rule:admin_api or project_id:%(project_id)s',
                       description='An administrator, or a member of the '
                                   'project that owns the object.'),
    policy.DocumentedRuleDefault(
        'livesnap:all_projects', ADMIN,
        'See and act on the servers, snapshots and operations of every '
        'project. Anyone else only ever finds their own project\'s.',
        [{'method': 'GET', 'path': _SERVERS},
         {'method': 'GET', 'path': '/v1/operations'}]),
    policy.DocumentedRuleDefault(
        'livesnap:host:list', ADMIN,
        'List the hypervisor hosts with their agents\' liveness.',
        [{'method': 'GET', 'path': '/v1/hosts'}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:create', ADMIN,
        'Register a server and its disks with livesnap.',
        [{'method': 'POST', 'path': _SERVERS}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:list', ADMIN_OR_OWNER,
        'List servers.', [{'method': 'GET', 'path': _SERVERS}]),
    policy.DocumentedRuleDefault(
        'livesnap:server:get', ADMIN_OR_OWNER,
        'Show a server and its disks.', [{'method': 'GET', 'path': _SERVER}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:list', ADMIN_OR_OWNER,
        'List the snapshots of a server.',
        [{'method': 'GET', 'path': _SNAPSHOTS}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:list:include_deleted', ADMIN_OR_OWNER,
        'List logically deleted snapshots too (include_deleted=true).',
        [{'method': 'GET', 'path': _SNAPSHOTS + '?include_deleted=true'}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:create', ADMIN_OR_OWNER,
        'Take an online snapshot of a disk of a server.',
        [{'method': 'POST', 'path': _SNAPSHOTS}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:get', ADMIN_OR_OWNER,
        'Show a snapshot.', [{'method': 'GET', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:delete', ADMIN_OR_OWNER,
        'Delete a snapshot (physically, by merging, or logically).',
        [{'method': 'DELETE', 'path': _SNAPSHOT}]),
    policy.DocumentedRuleDefault(
        'livesnap:snapshot:revert', ADMIN_OR_OWNER,
        'Revert a disk of a shut-off server to a snapshot.',
        [{'method': 'POST', 'path': _SNAPSHOT + '/revert'}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:list', ADMIN_OR_OWNER,
        'List operations.', [{'method': 'GET', 'path': '/v1/operations'}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:get', ADMIN_OR_OWNER,
        'Show an operation with its steps and pause time.',
        [{'method': 'GET', 'path': '/v1/operations/{operation_id}'}]),
    policy.DocumentedRuleDefault(
        'livesnap:operation:unlimited', ADMIN,
        'Start snapshot operations without the per-project rate limit '
        '([api] operations_per_minute).',
        [{'method': 'POST', 'path': _SNAPSHOTS},
         {'method': 'DELETE', 'path': _SNAPSHOT},
         {'method': 'POST', 'path': _SNAPSHOT + '/revert'}]),
]

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
        raise exception.Forbidden(
            'The policy does not allow %s.' % rule.split(':', 1)[-1])
    raise exception.NotFound('The resource could not be found.')
