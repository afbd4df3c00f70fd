"""``snapshot create|list|show|delete|revert|clone``: disk snapshots."""

from cliff import lister
from cliff import show

from livesnapclient import exceptions
from livesnapclient import format as fmt
from livesnapclient.v1 import operations
from livesnapclient import wait

SNAPSHOT_FIELDS = ("id", "name", "server_id", "disk", "parent_id", "status",
                   "created_at", "taken_at", "size_bytes", "current",
                   "protected", "policy_id", "consistency",
                   "consistency_reason")
#: Fields of newer API versions: shown when the API gives them.
NEWER_FIELDS = ("protected", "policy_id", "consistency",
                "consistency_reason", "taken_at")
SNAPSHOT_FORMATTERS = {"size_bytes": fmt.SizeDetail,
                       "operation": fmt.Operation}


def snapshot_view(snapshot, operation=None):
    """The ``ShowOne`` columns and values of a snapshot, and of the
    operation that creates it when there is one.
    """
    obj = dict(snapshot)
    fields = SNAPSHOT_FIELDS
    if operation is not None:
        obj["operation"] = operation
        fields += ("operation",)
    return fmt.show(obj, fields, SNAPSHOT_FORMATTERS, optional=NEWER_FIELDS)


def add_quiesce_argument(parser):
    """``--quiesce``, for the commands that take snapshots."""
    parser.add_argument("--quiesce", choices=("required", "preferred", "off"),
                        help="freeze the guest's filesystems through its "
                             "guest agent around the pause (default: "
                             "preferred when the server has a guest agent, "
                             "else off)")


class CreateSnapshot(wait.WaitMixin, show.ShowOne):
    """Take an online snapshot of a disk of a server."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        parser.add_argument("--disk", required=True,
                            help="disk name, e.g. vda")
        parser.add_argument("--name", required=True, help="snapshot name")
        add_quiesce_argument(parser)
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        snapshot, operation = client.create_snapshot(
            parsed_args.server_id, parsed_args.disk, parsed_args.name,
            quiesce=parsed_args.quiesce)
        operation = self.finish(client, parsed_args, operation)
        if parsed_args.wait:
            # The creation ended: show the final status and size.
            try:
                snapshot = client.get_snapshot(snapshot["id"])
            except exceptions.ApiError:
                pass
        return snapshot_view(snapshot, operation)


class ListSnapshot(lister.Lister):
    """List the snapshots of a server, or draw their trees (--tree)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        parser.add_argument(
            "--tree", action="store_true",
            help="draw the snapshot trees, one per disk, with deleted "
                 "nodes (table format; the others list the nodes)")
        parser.add_argument("--all", action="store_true",
                            help="include logically deleted snapshots")
        parser.add_argument("--ascii", action="store_true",
                            help="draw the tree with ASCII characters only")
        return parser

    def take_action(self, parsed_args):
        snapshots = self.app.client_manager.livesnap.list_snapshots(
            parsed_args.server_id,
            include_deleted=parsed_args.tree or parsed_args.all)
        self._snapshots = snapshots
        ordered = sorted(snapshots, key=lambda s: (
            (s.get("disk") or "",) + fmt.creation_order(s)))
        columns = [("ID", "id"), ("Name", "name"), ("Disk", "disk"),
                   ("Parent", "parent_id"), ("Status", "status"),
                   ("Size", "size_bytes"), ("Created", "created_at"),
                   ("Taken", "taken_at"), ("Current", "current")]
        if not any("taken_at" in s for s in snapshots):
            # An API older than taken_at.
            columns.remove(("Taken", "taken_at"))
        return (tuple(c for c, _ in columns),
                fmt.rows(ordered, tuple(f for _, f in columns),
                         {"size_bytes": fmt.Size, "current": fmt.Current}))

    def produce_output(self, parsed_args, column_names, data):
        if not (parsed_args.tree and parsed_args.formatter == "table"):
            return super().produce_output(parsed_args, column_names, data)
        stdout = self.app.stdout
        if not self._snapshots:
            stdout.write("No snapshots.\n")
            return 0
        glyphs = fmt.tree_glyphs(stdout, parsed_args.ascii)
        stdout.write("\n".join(fmt.draw_tree(self._snapshots, glyphs))
                     + "\n")
        return 0


class ShowSnapshot(show.ShowOne):
    """Show a snapshot."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("snapshot_id", metavar="<snapshot>",
                            help="snapshot id")
        return parser

    def take_action(self, parsed_args):
        return snapshot_view(self.app.client_manager.livesnap.get_snapshot(
            parsed_args.snapshot_id))


class ProtectSnapshot(show.ShowOne):
    """Protect a snapshot: it cannot be deleted and no policy prunes it."""

    protected = True

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("snapshot_id", metavar="<snapshot>",
                            help="snapshot id")
        return parser

    def take_action(self, parsed_args):
        return snapshot_view(
            self.app.client_manager.livesnap.protect_snapshot(
                parsed_args.snapshot_id, self.protected))


class UnprotectSnapshot(ProtectSnapshot):
    """Unprotect a snapshot."""

    protected = False


class DeleteSnapshot(wait.WaitMixin, show.ShowOne):
    """Delete a snapshot; shows the mode the conductor chose (physical,
    merge or logical).
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("snapshot_id", metavar="<snapshot>",
                            help="snapshot id")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        operation = client.delete_snapshot(parsed_args.snapshot_id)
        operations.note_on_stdout(
            self, parsed_args,
            "Deleting snapshot %s: mode %s, operation %s"
            % (parsed_args.snapshot_id, operation.get("mode"),
               operation.get("id")))
        return operations.operation_view(
            self.finish(client, parsed_args, operation))


class RevertSnapshot(wait.WaitMixin, show.ShowOne):
    """Revert a disk to a snapshot (the server must be shut off)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("snapshot_id", metavar="<snapshot>",
                            help="snapshot id")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        operation = client.revert_snapshot(parsed_args.snapshot_id)
        operations.note_on_stdout(
            self, parsed_args,
            "Reverting to snapshot %s: operation %s"
            % (parsed_args.snapshot_id, operation.get("id")))
        return operations.operation_view(
            self.finish(client, parsed_args, operation))


class CloneSnapshot(wait.WaitMixin, show.ShowOne):
    """Make a new disk from a snapshot: a full copy (flat) or a layer on
    it (linked), for a server of the same project on the same host.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("snapshot_id", metavar="<snapshot>",
                            help="snapshot id")
        parser.add_argument("--disk", required=True, metavar="<name>",
                            help="name of the new disk")
        parser.add_argument("--mode", choices=("flat", "linked"),
                            default="flat",
                            help="flat: a standalone copy (default); "
                                 "linked: a layer on the snapshot, which "
                                 "then stays until the new disk goes")
        parser.add_argument("--server", metavar="<server>",
                            help="server that gets the new disk (default: "
                                 "the snapshot's own)")
        parser.add_argument("--name", metavar="<name>",
                            help="a label kept with the operation")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        operation = client.clone_snapshot(
            parsed_args.snapshot_id, parsed_args.mode, parsed_args.disk,
            server_id=parsed_args.server, name=parsed_args.name)
        operations.note_on_stdout(
            self, parsed_args,
            "Cloning snapshot %s into disk %s: operation %s"
            % (parsed_args.snapshot_id, parsed_args.disk,
               operation.get("id")))
        return operations.operation_view(
            self.finish(client, parsed_args, operation))
