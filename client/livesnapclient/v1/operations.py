"""``operation show|list|cancel``: snapshot operations and their steps."""

from cliff import lister
from cliff import show

from livesnapclient import format as fmt
from livesnapclient import wait

OPERATION_FIELDS = ("id", "action", "status", "mode", "server_id", "disk",
                    "snapshot_id", "pause_ms", "progress", "error",
                    "created_at", "updated_at", "steps")


def operation_view(operation):
    """The ``ShowOne`` columns and values of an operation and its steps."""
    return fmt.show(operation, OPERATION_FIELDS, {"steps": fmt.Steps})


def note_on_stdout(command, parsed_args, text):
    """Print a line before the table (``table`` format only: the machine
    formats keep stdout to the data).
    """
    if parsed_args.formatter == "table":
        command.app.stdout.write(text + "\n")


class ShowOperation(show.ShowOne):
    """Show an operation and its steps with their durations."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("operation_id", metavar="<operation>",
                            help="operation id")
        return parser

    def take_action(self, parsed_args):
        return operation_view(
            self.app.client_manager.livesnap.get_operation(
                parsed_args.operation_id))


class ListOperation(lister.Lister):
    """List operations, newest first as the API returns them."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--server", metavar="<server>",
                            help="only the operations of this server")
        return parser

    def take_action(self, parsed_args):
        operations = self.app.client_manager.livesnap.list_operations(
            parsed_args.server)
        return (("ID", "Action", "Status", "Mode", "Server", "Disk",
                 "Snapshot", "Pause (ms)", "Created"),
                fmt.rows(operations, ("id", "action", "status", "mode",
                                      "server_id", "disk", "snapshot_id",
                                      "pause_ms", "created_at")))


class CancelOperation(wait.WaitMixin, show.ShowOne):
    """Cancel a merge that is still copying (admin)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("operation_id", metavar="<operation>",
                            help="operation id")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        operation = client.cancel_operation(parsed_args.operation_id)
        note_on_stdout(self, parsed_args,
                       "Cancelling operation %s" % operation.get("id"))
        return operation_view(self.finish(client, parsed_args, operation))
