"""``livesnap-status upgrade check``: is this deployment ready to run the
installed code?  Run it after installing new code and before restarting
the services (the OpenStack habit, through oslo.upgradecheck).

    livesnap-status --config-file /etc/livesnap/livesnap.conf upgrade check

Exit status: 0 every check passed, 1 a warning (works, but look), 2 a
failure (do not start the new code before fixing it), 255 a check could
not run.  ``--json`` prints the results as JSON.
"""

import datetime
import sys

from alembic import migration as alembic_migration
from alembic import script as alembic_script
from oslo_config import cfg
from oslo_upgradecheck import common_checks
from oslo_upgradecheck import upgradecheck
import sqlalchemy as sa

from agent import rpcapi as agent_rpcapi
from conductor import agent_versions
from conductor.api import auth
from conductor.api import loader as api_loader
from conductor.db import api as db
from conductor.db import migration
from conductor.db import models
from conductor import hostauth
from conductor import states
from livesnap import conf as livesnap_conf  # noqa: F401  (registers options)
from livesnap import service as common_service

CONF = cfg.CONF

#: Operations running longer than this are worth a look before an upgrade.
STUCK_AFTER = datetime.timedelta(hours=1)


def _version_tuple(version):
    try:
        major, minor = str(version).split('.', 1)
        return int(major), int(minor)
    except (TypeError, ValueError):
        return (1, 0)


class Checks(upgradecheck.UpgradeCommands):
    """The checks, in the order they are printed."""

    def _check_schema(self):
        """The database schema is at the newest migration this code has."""
        script = alembic_script.ScriptDirectory.from_config(
            migration._config())
        head = script.get_current_head()
        try:
            with db.get_engine().connect() as conn:
                current = alembic_migration.MigrationContext.configure(
                    conn).get_current_revision()
        except sa.exc.DBAPIError as exc:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Cannot reach the database: %s' % (exc.orig,))
        if current == head:
            return upgradecheck.Result(upgradecheck.Code.SUCCESS,
                                       'Schema at revision %s.' % head)
        return upgradecheck.Result(
            upgradecheck.Code.FAILURE,
            'The schema is at revision %s, this code needs %s: run '
            '"livesnap-manage db sync" before starting the conductors.'
            % (current or 'none (empty database)', head))

    def _check_agents(self):
        """Agents that are up speak an RPC version the conductor can pin
        to; agents older than the conductor are named (they get what
        their version takes until upgraded).  A host whose agent last
        reported a version older than ``agent_versions.MINIMUM`` (or none),
        up or not, is a failure: this conductor ignores its heartbeats and
        sends it nothing.
        """
        ours = _version_tuple(agent_rpcapi.RPC_API_VERSION)
        try:
            with db.transaction() as s:
                hosts = [(h.name, (h.info or {}).get('rpc_version'),
                          db.host_is_alive(s, h.name))
                         for h in s.scalars(sa.select(models.Host))]
        except sa.exc.DBAPIError as exc:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Cannot reach the database: %s' % (exc.orig,))
        unsupported = sorted(
            '%s (%s%s)' % (name, version or 'no version',
                           '' if alive else ', down')
            for name, version, alive in hosts
            if not agent_versions.supported(version or '1.0'))
        if unsupported:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Agents older than agent API %s, the oldest this conductor '
                'serves: %s. Upgrade them before starting the new '
                'conductors (see docs/upgrading.md).'
                % (agent_versions.MINIMUM, ', '.join(unsupported)))
        up = [(name, version) for name, version, alive in hosts if alive]
        if not up:
            return upgradecheck.Result(
                upgradecheck.Code.SUCCESS, 'No agent is up (%d known).'
                % len(hosts))
        older = sorted('%s (%s)' % (name, version or '1.0')
                       for name, version in up
                       if _version_tuple(version or '1.0') < ours)
        newer = sorted('%s (%s)' % (name, version) for name, version in up
                       if version and _version_tuple(version) > ours)
        if newer:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Agents newer than this conductor (agent API %s): %s. '
                'Upgrade the conductors first.'
                % (agent_rpcapi.RPC_API_VERSION, ', '.join(newer)))
        if older:
            return upgradecheck.Result(
                upgradecheck.Code.WARNING,
                'Agents on an older agent API than %s: %s. They keep '
                'working (the conductor pins its messages to the lowest '
                'version up); upgrade them to use the new features.'
                % (agent_rpcapi.RPC_API_VERSION, ', '.join(older)))
        return upgradecheck.Result(
            upgradecheck.Code.SUCCESS, '%d agent(s) up, all on agent API '
            '%s.' % (len(up), agent_rpcapi.RPC_API_VERSION))

    def _check_operations(self):
        """No operation has been running for hours (restarting the
        conductors does not lose one, but one stuck that long wants an
        operator's look first: ``livesnap-manage audit``).
        """
        cutoff = models.utcnow() - STUCK_AFTER
        try:
            with db.transaction() as s:
                stuck = list(s.scalars(
                    sa.select(models.Operation.id).where(
                        models.Operation.status == states.RUNNING,
                        models.Operation.created_at < cutoff)
                    .order_by(models.Operation.created_at).limit(20)))
        except sa.exc.DBAPIError as exc:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Cannot reach the database: %s' % (exc.orig,))
        if stuck:
            return upgradecheck.Result(
                upgradecheck.Code.WARNING,
                'Operations running for more than %s: %s. Look at them '
                '(livesnap-manage audit) before upgrading.'
                % (STUCK_AFTER, ', '.join(stuck)))
        return upgradecheck.Result(upgradecheck.Code.SUCCESS,
                                   'No operation is stuck.')

    def _check_auth(self):
        """The API's authentication settings let the conductor start."""
        try:
            auth.check_config()
        except common_service.ConfigurationError as exc:
            return upgradecheck.Result(upgradecheck.Code.FAILURE, str(exc))
        return upgradecheck.Result(
            upgradecheck.Code.SUCCESS,
            'auth_strategy = %s.' % CONF.api.auth_strategy)

    def _check_api_pipeline(self):
        """The API's paste file is found and its pipeline loads."""
        try:
            path = api_loader.paste_config_path()
            api_loader.load_app(path)
        except Exception as exc:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'The API pipeline does not load: %s' % exc)
        return upgradecheck.Result(
            upgradecheck.Code.SUCCESS,
            '%s, pipeline "%s".' % (path, CONF.api.auth_strategy))

    def _check_host_keys(self):
        """With host keys (docs/security.md), every known host has one; a
        host without one while keys are required is a failure (the
        conductor refuses everything its agent sends).
        """
        required = CONF.conductor.require_host_keys
        if not CONF.conductor.host_keys_dir:
            if required:
                return upgradecheck.Result(
                    upgradecheck.Code.FAILURE,
                    '[conductor] require_host_keys is set without '
                    'host_keys_dir: every agent message would be refused.')
            return upgradecheck.Result(
                upgradecheck.Code.SUCCESS,
                'No host keys: agents\' messages are accepted unsigned '
                '(docs/security.md).')
        try:
            with db.transaction() as s:
                names = sorted(s.scalars(sa.select(models.Host.name)))
        except sa.exc.DBAPIError as exc:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Cannot reach the database: %s' % (exc.orig,))
        missing = [name for name in names if not hostauth.has_key(name)]
        if missing and required:
            return upgradecheck.Result(
                upgradecheck.Code.FAILURE,
                'Hosts without a key in %s while require_host_keys is set '
                '(their agents are refused): %s.'
                % (CONF.conductor.host_keys_dir, ', '.join(missing)))
        if missing:
            return upgradecheck.Result(
                upgradecheck.Code.WARNING,
                'Hosts without a key in %s: %s. Their agents can only send '
                'unsigned messages (docs/upgrading.md).'
                % (CONF.conductor.host_keys_dir, ', '.join(missing)))
        return upgradecheck.Result(
            upgradecheck.Code.SUCCESS, '%d host(s), each with a key; '
            'require_host_keys is %s.' % (len(names),
                                           'on' if required else 'off'))

    _upgrade_checks = (
        ('Database schema', _check_schema),
        ('Agent API versions', _check_agents),
        ('Operations in progress', _check_operations),
        ('Host keys', _check_host_keys),
        ('API authentication', _check_auth),
        ('API pipeline', _check_api_pipeline),
        ('Policy file', (common_checks.check_policy_json,
                         {'conf': CONF})),
    )


def main(argv=None):
    """The ``livesnap-status`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    return upgradecheck.main(CONF, project='livesnap',
                             upgrade_command=Checks(), argv=argv)
