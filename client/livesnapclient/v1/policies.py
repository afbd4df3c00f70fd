"""``policy create|update|list|show|delete|runs``: snapshot policies,
schedules with retention (docs/schedules.md)."""

from cliff import columns
from cliff import command
from cliff import lister
from cliff import show

from livesnapclient import exceptions
from livesnapclient import format as fmt

POLICY_FIELDS = ("id", "name", "project_id", "server_id", "disks",
                 "interval", "cron", "timezone", "retention", "enabled",
                 "last_run", "last_outcome", "next_run")
#: ``--keep-last`` and the like, in the order of the retention rule.
RETENTION = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


class Retention(columns.FormattableColumn):
    """A retention, as ``keep_daily=7, keep_weekly=4`` (``keep all``)."""

    def human_readable(self):
        return ", ".join(
            "%s=%s" % (k, v) for k, v in sorted((self._value or {}).items())
            if v) or "keep all"


class PolicyDisks(columns.FormattableColumn):
    """The disks a policy snapshots (``all`` when it names none)."""

    def human_readable(self):
        return ", ".join(self._value or []) or "all"


class Pruned(columns.FormattableColumn):
    """The ids a run pruned (``-`` for none)."""

    def human_readable(self):
        return ", ".join(self._value or []) or "-"


def policy_view(policy):
    """The ``ShowOne`` columns and values of a policy."""
    return fmt.show(policy, POLICY_FIELDS,
                    {"retention": Retention, "disks": PolicyDisks},
                    optional=("project_id",))


def _schedule(policy):
    if policy.get("interval"):
        return "every %ss" % policy["interval"]
    return "%s (%s)" % (policy.get("cron"), policy.get("timezone"))


def _add_policy_fields(parser, create):
    """The options create and update share."""
    parser.add_argument("--name", required=create, help="policy name")
    when = parser.add_mutually_exclusive_group(required=create)
    when.add_argument("--interval", type=int, metavar="SECONDS",
                      help="run every SECONDS")
    when.add_argument("--cron", metavar="EXPR",
                      help="five-field cron expression, e.g. '0 2 * * *'")
    parser.add_argument("--timezone", metavar="TZ",
                        help="IANA time zone of --cron and of the "
                             "retention's periods (default UTC)")
    parser.add_argument("--disk", dest="disks", action="append",
                        metavar="NAME",
                        help="a disk to snapshot (repeatable; default every "
                             "disk)")
    for k in RETENTION:
        parser.add_argument(
            "--keep-" + k, type=int, metavar="N",
            help="keep the newest %s" % (
                "N snapshots" if k == "last" else
                "snapshot of each of the last N %s periods" % k))


def _policy_body(parsed_args):
    """The fields given on the command line, for create and update."""
    body = {}
    for field in ("name", "interval", "cron", "timezone"):
        value = getattr(parsed_args, field, None)
        if value is not None:
            body[field] = value
    if parsed_args.disks:
        body["disks"] = parsed_args.disks
    keep = {"keep_" + k: getattr(parsed_args, "keep_" + k)
            for k in RETENTION
            if getattr(parsed_args, "keep_" + k) is not None}
    if keep:
        body["retention"] = keep
    if getattr(parsed_args, "enabled", None) is not None:
        body["enabled"] = parsed_args.enabled
    return body


class CreatePolicy(show.ShowOne):
    """Attach a snapshot policy to a server."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        _add_policy_fields(parser, create=True)
        return parser

    def take_action(self, parsed_args):
        body = _policy_body(parsed_args)
        body["server_id"] = parsed_args.server_id
        body.setdefault("retention", {})
        return policy_view(
            self.app.client_manager.livesnap.create_policy(body))


class UpdatePolicy(show.ShowOne):
    """Change a snapshot policy (a retention given replaces the whole)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("policy_id", metavar="<policy>",
                            help="policy id")
        _add_policy_fields(parser, create=False)
        onoff = parser.add_mutually_exclusive_group()
        onoff.add_argument("--enable", dest="enabled", action="store_true",
                           default=None, help="run the policy again")
        onoff.add_argument("--disable", dest="enabled",
                           action="store_false",
                           help="stop running the policy")
        return parser

    def take_action(self, parsed_args):
        body = _policy_body(parsed_args)
        if not body:
            raise exceptions.ClientError("Error: nothing to change")
        return policy_view(self.app.client_manager.livesnap.update_policy(
            parsed_args.policy_id, body))


class ListPolicy(lister.Lister):
    """List snapshot policies with their last and next run."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--server", metavar="<server>",
                            help="only the policies of this server")
        return parser

    def take_action(self, parsed_args):
        policies = self.app.client_manager.livesnap.list_policies(
            parsed_args.server)
        return (("ID", "Name", "Server", "Schedule", "Retention", "Enabled",
                 "Last run", "Last outcome", "Next run"),
                [(fmt.Cell(p.get("id")), fmt.Cell(p.get("name")),
                  fmt.Cell(p.get("server_id")), fmt.Cell(_schedule(p)),
                  Retention(p.get("retention")), fmt.Cell(p.get("enabled")),
                  fmt.Cell(p.get("last_run")),
                  fmt.Cell(p.get("last_outcome")),
                  fmt.Cell(p.get("next_run"))) for p in policies])


class ShowPolicy(show.ShowOne):
    """Show a snapshot policy with its last and next run."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("policy_id", metavar="<policy>",
                            help="policy id")
        return parser

    def take_action(self, parsed_args):
        return policy_view(self.app.client_manager.livesnap.get_policy(
            parsed_args.policy_id))


class DeletePolicy(command.Command):
    """Delete a snapshot policy (its snapshots stay, as yours)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("policy_id", metavar="<policy>",
                            help="policy id")
        return parser

    def take_action(self, parsed_args):
        policy = self.app.client_manager.livesnap.delete_policy(
            parsed_args.policy_id)
        self.app.stdout.write("Deleted policy %s; its snapshots stay.\n"
                              % policy.get("id"))


class ListPolicyRun(lister.Lister):
    """A policy's runs, newest first: outcome, reason, snapshot, pruned."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("policy_id", metavar="<policy>",
                            help="policy id")
        return parser

    def take_action(self, parsed_args):
        runs = self.app.client_manager.livesnap.list_policy_runs(
            parsed_args.policy_id)
        return (("Slot", "Disk", "Outcome", "Attempts", "Snapshot",
                 "Pruned", "Reason"),
                [(fmt.Cell(r.get("scheduled_for")), fmt.Cell(r.get("disk")),
                  fmt.Cell(r.get("outcome")), fmt.Cell(r.get("attempts")),
                  fmt.Cell(r.get("snapshot_id")),
                  Pruned(r.get("pruned_ids")),
                  fmt.Cell("%s: %s" % (r["reason_code"], r.get("reason"))
                           if r.get("reason_code") else None))
                 for r in runs])
