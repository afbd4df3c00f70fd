"""``snapshot group create|list|show|delete|revert``: several disks of a
server snapshotted in one pause (consistent with one another)."""

from cliff import lister
from cliff import show

from livesnapclient import exceptions
from livesnapclient import format as fmt
from livesnapclient.v1 import snapshots
from livesnapclient import wait

GROUP_FIELDS = ("id", "name", "server_id", "created_at", "snapshots",
                "operation")


def _members(group):
    return ", ".join("%s:%s (%s)" % (s.get("disk"), s.get("id"),
                                     s.get("status"))
                     for s in group.get("snapshots") or [])


def group_view(group, operation=None):
    obj = dict(group, snapshots=_members(group))
    fields = GROUP_FIELDS[:-1]
    if operation is not None:
        obj["operation"] = operation
        fields = GROUP_FIELDS
    return fmt.show(obj, fields, {"operation": fmt.Operation})


class CreateSnapshotGroup(wait.WaitMixin, show.ShowOne):
    """Snapshot several (default: all) disks of a server in one pause."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        parser.add_argument("--name", required=True, help="group name")
        parser.add_argument("--disk", action="append", dest="disks",
                            help="a disk name (repeat; default: every "
                                 "disk of the server)")
        snapshots.add_quiesce_argument(parser)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        group, operation = client.create_snapshot_group(
            parsed_args.server_id, parsed_args.name, parsed_args.disks,
            quiesce=parsed_args.quiesce)
        operation = self.finish(client, parsed_args, operation)
        if parsed_args.wait:
            try:
                group = client.get_snapshot_group(group["id"])
            except exceptions.ApiError:
                pass
        return group_view(group, operation)


class ListSnapshotGroup(lister.Lister):
    """List the snapshot groups of a server."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        return parser

    def take_action(self, parsed_args):
        groups = self.app.client_manager.livesnap.list_snapshot_groups(
            parsed_args.server_id)
        return (("ID", "Name", "Created", "Snapshots"),
                [(g["id"], g["name"], g.get("created_at"), _members(g))
                 for g in groups])


class ShowSnapshotGroup(show.ShowOne):
    """Show a snapshot group and its snapshots."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("group_id", metavar="<group>", help="group id")
        return parser

    def take_action(self, parsed_args):
        return group_view(self.app.client_manager.livesnap
                          .get_snapshot_group(parsed_args.group_id))


class DeleteSnapshotGroup(lister.Lister):
    """Delete every snapshot of a group (one operation per disk)."""

    verb = "delete"

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("group_id", metavar="<group>", help="group id")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        ops = getattr(client, "%s_snapshot_group" % self.verb)(
            parsed_args.group_id)
        return (("Operation", "Action", "Disk", "Status", "Mode"),
                fmt.rows(ops, ("id", "action", "disk", "status", "mode")))


class RevertSnapshotGroup(DeleteSnapshotGroup):
    """Revert every disk of a group (the server must be shut off)."""

    verb = "revert"
