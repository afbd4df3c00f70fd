"""``server list|show|create|delete``: servers and their disks."""

import argparse

from cliff import lister
from cliff import show

from livesnapclient import format as fmt
from livesnapclient.v1 import operations
from livesnapclient import wait

SERVER_FIELDS = ("id", "name", "project_id", "host", "qmp_socket",
                 "created_at", "disks")
#: Host details: the API leaves them out for callers who are not admins.
HOST_DETAILS = ("host", "qmp_socket")
SERVER_FORMATTERS = {"disks": fmt.Disks}


class ListServer(lister.Lister):
    """List the servers of your project (admins: all servers)."""

    def take_action(self, parsed_args):
        servers = self.app.client_manager.livesnap.list_servers()
        with_host = any("host" in s for s in servers)
        fields = ("id", "name", "project_id") + (
            ("host",) if with_host else ()) + ("disks",)
        headers = ("ID", "Name", "Project") + (
            ("Host",) if with_host else ()) + ("Disks",)
        return headers, fmt.rows(servers, fields, {"disks": fmt.Names})


def server_view(server):
    """The ``ShowOne`` columns and values of a server."""
    return fmt.show(server, SERVER_FIELDS, SERVER_FORMATTERS,
                    optional=HOST_DETAILS + ("created_at",))


class ShowServer(show.ShowOne):
    """Show a server and its disks."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        return parser

    def take_action(self, parsed_args):
        return server_view(
            self.app.client_manager.livesnap.get_server(
                parsed_args.server_id))


def _parse_disk(spec):
    """Parse ``NAME=PATH`` for ``--disk``."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            "expected NAME=PATH, got %r" % spec)
    return {"name": name, "path": path}


class CreateServer(show.ShowOne):
    """Register a server and its disks (admin only)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--id", required=True, help="server id")
        parser.add_argument("--name", required=True, help="server name")
        parser.add_argument("--project", required=True, help="project id")
        parser.add_argument("--host", required=True, help="hypervisor host")
        parser.add_argument("--qmp-socket", metavar="PATH",
                            help="QMP socket of the running QEMU")
        parser.add_argument("--disk", dest="disks", action="append",
                            type=_parse_disk, required=True,
                            metavar="NAME=PATH",
                            help="a disk and its active image (repeatable)")
        return parser

    def take_action(self, parsed_args):
        server = {"id": parsed_args.id, "name": parsed_args.name,
                  "project_id": parsed_args.project,
                  "host": parsed_args.host, "disks": parsed_args.disks}
        if parsed_args.qmp_socket:
            server["qmp_socket"] = parsed_args.qmp_socket
        return server_view(
            self.app.client_manager.livesnap.create_server(server))


class DeleteServer(wait.WaitMixin, show.ShowOne):
    """Unregister a server (admin): its snapshots are deleted (merged into
    its live layers) and its records removed; the files its disks were
    registered with stay.
    """

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("server_id", metavar="<server>",
                            help="server id")
        parser.add_argument(
            "--keep-snapshots", action="store_true",
            help="remove the records only; the snapshot layers stay and "
                 "are listed")
        parser.add_argument(
            "--force", action="store_true",
            help="remove the records only even though the server's host "
                 "is down (the snapshot layers stay and are listed)")
        return parser

    def take_action(self, parsed_args):
        client = self.app.client_manager.livesnap
        answer = client.delete_server(
            parsed_args.server_id, keep_snapshots=parsed_args.keep_snapshots,
            force=parsed_args.force)
        operation = answer.get("operation")
        if operation is None:
            files = answer["server"].get("files_left") or []
            return (("id", "status", "files_left"),
                    (parsed_args.server_id, answer["server"].get("status"),
                     "\n".join(f.get("path") or str(f.get("locator"))
                               for f in files)))
        operations.note_on_stdout(
            self, parsed_args,
            "Deleting server %s: operation %s"
            % (parsed_args.server_id, operation.get("id")))
        return operations.operation_view(
            self.finish(client, parsed_args, operation))
