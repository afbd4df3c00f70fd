"""``livesnap``: the command-line client of the livesnap REST API.

The client talks to the conductor's tenant REST API only and uses nothing
beyond the standard library, so it runs on any machine with Python 3.

Global options may be given before or after the command::

    livesnap --url http://conductor:8780 --token T server list
    livesnap snapshot list srv1 --tree -f json

Exit status: 0 on success; 1 on an API error, a connection failure or a
failed operation (``--wait``); 2 on bad usage or when ``--wait`` times out.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8780"
DEFAULT_WAIT_TIMEOUT = 600.0
#: Seconds between two polls of an operation while waiting for it.
POLL_INTERVAL = 0.5
#: Socket timeout of a single HTTP request, in seconds.
REQUEST_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_TIMEOUT = 2

FINAL_STATUSES = ("succeeded", "failed")


class CLIError(Exception):
    """A failure to report on stderr with exit status 1."""


class ApiError(CLIError):
    """The API answered with an HTTP error status.

    :param status: the HTTP status code.
    :param code: the ``error.code`` of the JSON body (or the HTTP reason).
    :param message: the ``error.message`` of the JSON body (or the raw body).
    """

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self):
        return "Error (HTTP %s %s): %s" % (self.status, self.code,
                                           self.message)


class ConnectionFailed(CLIError):
    """The API could not be reached at all."""


class ApiClient:
    """A minimal JSON client of the livesnap REST API (``/v1``).

    :param url: base URL of the API, without the ``/v1`` prefix.
    :param token: value of the ``X-Auth-Token`` header, or None to send none.
    :param timeout: socket timeout of each request, in seconds.
    """

    def __init__(self, url, token=None, timeout=REQUEST_TIMEOUT):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method, path, body=None, query=None):
        """Send one request and return the decoded JSON answer.

        :param method: HTTP method.
        :param path: path below ``/v1``, e.g. ``/servers``.
        :param body: object to send as JSON, or None.
        :param query: dict of query parameters, or None.
        :returns: the decoded JSON body, or None for an empty body.
        :raises ApiError: on a 4xx/5xx answer.
        :raises ConnectionFailed: when the API cannot be reached.
        """
        url = "%s/v1%s" % (self.url, path)
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["X-Auth-Token"] = self.token
        req = urllib.request.Request(url, data=data, headers=headers,
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectionFailed(
                "Error: cannot connect to the livesnap API at %s: %s"
                % (self.url, reason)) from None
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise CLIError("Error: the API answered %s %s with a body that "
                           "is not JSON" % (method, path)) from None

    # Thin wrappers, one per REST resource call.

    def list_servers(self):
        return self.request("GET", "/servers")["servers"]

    def list_hosts(self):
        return self.request("GET", "/hosts")["hosts"]

    def get_server(self, server_id):
        return self.request("GET", "/servers/%s" % _q(server_id))["server"]

    def create_server(self, server):
        return self.request("POST", "/servers", {"server": server})["server"]

    def create_snapshot(self, server_id, disk, name):
        """:returns: the ``(snapshot, operation)`` pair of the answer."""
        resp = self.request("POST", "/servers/%s/snapshots" % _q(server_id),
                            {"snapshot": {"name": name, "disk": disk}})
        return resp["snapshot"], resp["operation"]

    def list_snapshots(self, server_id, include_deleted=False):
        query = {"include_deleted": "true"} if include_deleted else None
        return self.request("GET", "/servers/%s/snapshots" % _q(server_id),
                            query=query)["snapshots"]

    def get_snapshot(self, snapshot_id):
        return self.request("GET",
                            "/snapshots/%s" % _q(snapshot_id))["snapshot"]

    def delete_snapshot(self, snapshot_id):
        return self.request("DELETE",
                            "/snapshots/%s" % _q(snapshot_id))["operation"]

    def revert_snapshot(self, snapshot_id):
        return self.request("POST", "/snapshots/%s/revert"
                            % _q(snapshot_id))["operation"]

    def get_operation(self, operation_id):
        return self.request("GET",
                            "/operations/%s" % _q(operation_id))["operation"]

    def cancel_operation(self, operation_id):
        return self.request("POST", "/operations/%s/cancel"
                            % _q(operation_id))["operation"]

    def list_operations(self, server_id=None):
        query = {"server_id": server_id} if server_id else None
        return self.request("GET", "/operations",
                            query=query)["operations"]


def _q(value):
    """Quote one path segment."""
    return urllib.parse.quote(str(value), safe="")


def _api_error(exc):
    """Build an :class:`ApiError` from an ``HTTPError``.

    Uses the ``{"error": {"code", "message"}}`` body when there is one, and
    falls back to the HTTP reason and the raw body (a proxy's HTML page, say).
    """
    try:
        raw = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is best effort only
        raw = ""
    code = exc.reason or "error"
    message = raw.strip() or str(exc.reason)
    try:
        err = json.loads(raw)["error"]
        code = err.get("code", code)
        message = err.get("message", message)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return ApiError(exc.code, code, message)


# ---------------------------------------------------------------- formatting

def human_size(size):
    """Format a size in bytes with binary units (``1.5 GiB``); ``-`` if None.
    """
    if size is None:
        return "-"
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return "%d B" % size
    return "%.1f %s" % (size, unit)


def _cell(value):
    """Render one value for a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return ("%.2f" % value).rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def format_table(headers, rows):
    """Render rows as a boxed ASCII table, like the OpenStack clients.

    :param headers: column titles.
    :param rows: sequences of cell values, as long as ``headers``.
    :returns: the table as one string, without a trailing newline.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in
                                 zip(values, widths)) + " |"

    out = [rule, line(headers), rule]
    out.extend(line(row) for row in cells)
    out.append(rule)
    return "\n".join(out)


def format_fields(obj, fields, optional=()):
    """Render selected fields of one object as a Field/Value table.

    :param optional: fields shown only when the object has them (host
        details, which the API shows to admins only).
    """
    return format_table(("Field", "Value"),
                        [(f, obj.get(f)) for f in fields
                         if f not in optional or f in obj])


SERVER_FIELDS = ("id", "name", "project_id", "host", "qmp_socket")
#: Host details: the API leaves them out for callers who are not admins.
HOST_DETAILS = ("host", "qmp_socket")
SNAPSHOT_FIELDS = ("id", "name", "server_id", "disk", "parent_id", "status",
                   "created_at", "size_bytes", "current")
OPERATION_FIELDS = ("id", "action", "status", "mode", "server_id", "disk",
                    "snapshot_id", "pause_ms", "progress", "error",
                    "created_at", "updated_at")


def _snapshot_view(snapshot):
    """A snapshot with its size also made human-readable, for tables."""
    view = dict(snapshot)
    if snapshot.get("size_bytes") is not None:
        view["size_bytes"] = "%s (%s)" % (snapshot["size_bytes"],
                                          human_size(snapshot["size_bytes"]))
    return view


def _operation_text(op):
    """The table form of an operation: its fields, then its steps."""
    steps = op.get("steps") or []
    text = "%s\nSteps:\n%s" % (
        format_fields(op, OPERATION_FIELDS),
        format_table(("Step", "Status", "Duration (ms)"),
                     [(s.get("name"), s.get("status"), s.get("duration_ms"))
                      for s in steps]))
    if op.get("pause_ms") is not None:
        text += "\nGuest I/O paused for %s ms" % _cell(float(op["pause_ms"]))
    return text


class Output:
    """Where commands write, in the format the user chose.

    :param fmt: ``table`` or ``json``.
    :param stdout: stream for results.
    :param stderr: stream for progress and errors.
    """

    def __init__(self, fmt, stdout, stderr):
        self.fmt = fmt
        self.stdout = stdout
        self.stderr = stderr

    @property
    def json(self):
        return self.fmt == "json"

    def data(self, obj):
        """Print an API object (or a list of them) as JSON."""
        print(json.dumps(obj, indent=2, sort_keys=True), file=self.stdout)

    def text(self, text):
        print(text, file=self.stdout)

    def note(self, text):
        print(text, file=self.stderr)


# ------------------------------------------------------------- tree drawing

UNICODE_TREE = ("├── ", "└── ", "│   ", "    ")
ASCII_TREE = ("+- ", "`- ", "|  ", "   ")


def _tree_glyphs(stream, ascii_only):
    """Box-drawing glyphs when the stream can encode them, else ASCII."""
    if ascii_only:
        return ASCII_TREE
    try:
        "".join(UNICODE_TREE).encode(getattr(stream, "encoding", None)
                                     or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_TREE
    return UNICODE_TREE


def _node_label(snap):
    """One tree node: name, short id, status (or ``(deleted)``), size."""
    if snap.get("status") == "deleted":
        state = "(deleted)"
    else:
        state = snap.get("status") or "?"
    label = "%s [%s] %s %s" % (snap.get("name"), str(snap.get("id"))[:8],
                               state, human_size(snap.get("size_bytes")))
    if snap.get("current"):
        label += "  <- current"
    return label


def _sort_key(snap):
    return (snap.get("created_at") or "", snap.get("name") or "",
            str(snap.get("id")))


def draw_tree(snapshots, glyphs=UNICODE_TREE):
    """Draw the snapshot trees of a server, one tree per disk.

    A node whose parent is not in ``snapshots`` is a root; siblings are in
    creation order. The node the live image sits on is marked
    ``<- current``.

    :param snapshots: snapshot objects as the API returns them.
    :param glyphs: (branch, last branch, continuation, blank) prefixes.
    :returns: the drawing as a list of lines.
    """
    branch, last_branch, cont, blank = glyphs
    by_disk = {}
    for snap in snapshots:
        by_disk.setdefault(snap.get("disk") or "?", []).append(snap)

    lines = []
    for disk in sorted(by_disk):
        nodes = sorted(by_disk[disk], key=_sort_key)
        ids = {s["id"] for s in nodes}
        children = {}
        roots = []
        for snap in nodes:
            parent = snap.get("parent_id")
            if parent in ids and parent != snap["id"]:
                children.setdefault(parent, []).append(snap)
            else:
                roots.append(snap)
        seen = set()

        def walk(snap, prefix, connector, child_prefix):
            seen.add(snap["id"])
            lines.append(prefix + connector + _node_label(snap))
            kids = [k for k in children.get(snap["id"], ())
                    if k["id"] not in seen]
            for i, kid in enumerate(kids):
                last = i == len(kids) - 1
                walk(kid, prefix + child_prefix,
                     last_branch if last else branch,
                     blank if last else cont)

        if lines:
            lines.append("")
        lines.append("Disk %s:" % disk)
        for root in roots:
            walk(root, "", "", "")
        # A parent cycle leaves nodes unreachable: show them rather than hide.
        for snap in nodes:
            if snap["id"] not in seen:
                walk(snap, "", "", "")
    return lines


# ------------------------------------------------------------- waiting

def wait_for_operation(client, operation, timeout, out):
    """Poll an operation until it succeeds or fails.

    Status changes and progress (for long merges) go to stderr.

    :param client: an :class:`ApiClient`.
    :param operation: the operation object returned by the action.
    :param timeout: seconds to wait at most.
    :param out: the :class:`Output`.
    :returns: the final operation, or None on timeout.
    """
    deadline = time.monotonic() + timeout
    last = None
    op = operation
    while True:
        progress = op.get("progress")
        state = (op.get("status"), progress)
        if state != last:
            msg = "Operation %s: %s" % (op.get("id"), op.get("status"))
            if isinstance(progress, (int, float)) and \
                    not isinstance(progress, bool):
                msg += " (%.1f%%)" % progress
            out.note(msg)
            last = state
        if op.get("status") in FINAL_STATUSES:
            return op
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        op = client.get_operation(op["id"])


def _finish(client, args, out, operation, render):
    """Wait for ``operation`` if ``--wait`` was given, then print.

    :param render: callable taking the final operation, printing the result.
    :returns: the exit status.
    """
    if not args.wait:
        render(operation)
        return EXIT_OK
    final = wait_for_operation(client, operation, args.timeout, out)
    if final is None:
        out.note("Error: timed out after %s s waiting for operation %s"
                 % (args.timeout, operation.get("id")))
        return EXIT_TIMEOUT
    render(final)
    if final.get("status") == "failed":
        out.note("Error: operation %s failed: %s"
                 % (final.get("id"), final.get("error") or "unknown error"))
        return EXIT_FAILURE
    return EXIT_OK


# ------------------------------------------------------------- commands

def cmd_server_list(client, args, out):
    """``server list``: the servers of the caller's project."""
    servers = client.list_servers()
    if out.json:
        out.data(servers)
        return EXIT_OK
    with_host = any("host" in s for s in servers)
    out.text(format_table(
        ("ID", "Name", "Project") + (("Host",) if with_host else ())
        + ("Disks",),
        [(s.get("id"), s.get("name"), s.get("project_id"))
         + ((s.get("host"),) if with_host else ())
         + (", ".join(d.get("name", "?") for d in s.get("disks") or []),)
         for s in servers]))
    return EXIT_OK


def cmd_host_list(client, args, out):
    """``host list`` (admin): hypervisor hosts and their agents' state."""
    hosts = client.list_hosts()
    if out.json:
        out.data(hosts)
        return EXIT_OK
    out.text(format_table(
        ("Host", "State", "Last heartbeat", "Agent started", "Image dirs"),
        [(h.get("name"), h.get("state"), h.get("last_heartbeat"),
          h.get("agent_started_at"), ", ".join(h.get("image_dirs") or []))
         for h in hosts]))
    return EXIT_OK


def _print_server(server, out):
    if out.json:
        out.data(server)
        return
    out.text(format_fields(server, SERVER_FIELDS, optional=HOST_DETAILS))
    out.text("Disks:")
    disks = server.get("disks") or []
    if any("active_image" in d for d in disks):
        out.text(format_table(
            ("Disk", "Active image", "Snapshot", "Busy"),
            [(d.get("name"), d.get("active_image"), d.get("snapshot_id"),
              d.get("busy")) for d in disks]))
    else:
        out.text(format_table(
            ("Disk", "Snapshot", "Busy"),
            [(d.get("name"), d.get("snapshot_id"), d.get("busy"))
             for d in disks]))


def cmd_server_show(client, args, out):
    """``server show ID``: one server and its disks."""
    _print_server(client.get_server(args.server_id), out)
    return EXIT_OK


def _parse_disk(spec):
    """Parse ``NAME=PATH`` for ``--disk``."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(
            "expected NAME=PATH, got %r" % spec)
    return {"name": name, "path": path}


def cmd_server_create(client, args, out):
    """``server create``: register a server and its disks (admin only)."""
    server = {"id": args.id, "name": args.name, "project_id": args.project,
              "host": args.host, "disks": args.disks}
    if args.qmp_socket:
        server["qmp_socket"] = args.qmp_socket
    _print_server(client.create_server(server), out)
    return EXIT_OK


def cmd_snapshot_create(client, args, out):
    """``snapshot create SERVER --disk D --name N [--wait]``."""
    snapshot, operation = client.create_snapshot(args.server_id, args.disk,
                                                 args.name)

    def render(op):
        snap = snapshot
        if args.wait:
            # The creation finished: show the final status and size.
            try:
                snap = client.get_snapshot(snapshot["id"])
            except ApiError:
                pass
        if out.json:
            out.data({"snapshot": snap, "operation": op})
            return
        out.text(format_fields(_snapshot_view(snap), SNAPSHOT_FIELDS))
        if args.wait:
            out.text("Operation:")
            out.text(_operation_text(op))
        else:
            out.text("Operation: %s (%s)" % (op.get("id"), op.get("status")))

    return _finish(client, args, out, operation, render)


def cmd_snapshot_list(client, args, out):
    """``snapshot list SERVER [--tree] [--all]``."""
    snapshots = client.list_snapshots(args.server_id,
                                      include_deleted=args.tree or args.all)
    if out.json:
        out.data(snapshots)
        return EXIT_OK
    if args.tree:
        if not snapshots:
            out.text("No snapshots.")
            return EXIT_OK
        glyphs = _tree_glyphs(out.stdout, args.ascii)
        out.text("\n".join(draw_tree(snapshots, glyphs)))
        return EXIT_OK
    out.text(format_table(
        ("ID", "Name", "Disk", "Parent", "Status", "Size", "Created",
         "Current"),
        [(s.get("id"), s.get("name"), s.get("disk"), s.get("parent_id"),
          s.get("status"), human_size(s.get("size_bytes")),
          s.get("created_at"), "*" if s.get("current") else "")
         for s in sorted(snapshots,
                         key=lambda s: (s.get("disk") or "",) + _sort_key(s))
         ]))
    return EXIT_OK


def cmd_snapshot_show(client, args, out):
    """``snapshot show ID``."""
    snapshot = client.get_snapshot(args.snapshot_id)
    if out.json:
        out.data(snapshot)
    else:
        out.text(format_fields(_snapshot_view(snapshot), SNAPSHOT_FIELDS))
    return EXIT_OK


def _render_operation(out, header=None):
    """A renderer for :func:`_finish` printing one operation."""
    def render(op):
        if out.json:
            out.data(op)
            return
        if header:
            out.text(header(op))
        out.text(_operation_text(op))
    return render


def cmd_snapshot_delete(client, args, out):
    """``snapshot delete ID [--wait]``: prints the mode the conductor chose.
    """
    operation = client.delete_snapshot(args.snapshot_id)
    if not out.json:
        out.text("Deleting snapshot %s: mode %s, operation %s"
                 % (args.snapshot_id, operation.get("mode"),
                    operation.get("id")))
    return _finish(client, args, out, operation, _render_operation(out))


def cmd_snapshot_revert(client, args, out):
    """``snapshot revert ID [--wait]``: the server must be shut off."""
    operation = client.revert_snapshot(args.snapshot_id)
    if not out.json:
        out.text("Reverting to snapshot %s: operation %s"
                 % (args.snapshot_id, operation.get("id")))
    return _finish(client, args, out, operation, _render_operation(out))


def cmd_operation_show(client, args, out):
    """``operation show ID``: the operation, then its steps."""
    _render_operation(out)(client.get_operation(args.operation_id))
    return EXIT_OK


def cmd_operation_cancel(client, args, out):
    """``operation cancel ID [--wait]`` (admin): stop a merge's copy."""
    operation = client.cancel_operation(args.operation_id)
    if not out.json:
        out.text("Cancelling operation %s" % operation.get("id"))
    return _finish(client, args, out, operation, _render_operation(out))


def cmd_operation_list(client, args, out):
    """``operation list [--server ID]``."""
    operations = client.list_operations(args.server)
    if out.json:
        out.data(operations)
        return EXIT_OK
    out.text(format_table(
        ("ID", "Action", "Status", "Mode", "Server", "Disk", "Snapshot",
         "Pause (ms)", "Created"),
        [(o.get("id"), o.get("action"), o.get("status"), o.get("mode"),
          o.get("server_id"), o.get("disk"), o.get("snapshot_id"),
          o.get("pause_ms"), o.get("created_at")) for o in operations]))
    return EXIT_OK


# ------------------------------------------------------------- parser

def _global_options(parser, defaults):
    """Add the global options; with ``defaults`` False they are suppressed,
    so that a value given after the command overrides one given before it.
    """
    def d(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--url", default=d(os.environ.get("LIVESNAP_URL", DEFAULT_URL)),
        help="API endpoint (env LIVESNAP_URL, default %s)" % DEFAULT_URL)
    parser.add_argument(
        "--token", default=d(os.environ.get("LIVESNAP_TOKEN")),
        help="authentication token sent as X-Auth-Token "
             "(env LIVESNAP_TOKEN)")
    parser.add_argument(
        "-f", "--format", choices=("table", "json"), default=d("table"),
        help="output format (default table)")
    parser.add_argument(
        "--timeout", type=float, default=d(DEFAULT_WAIT_TIMEOUT),
        help="seconds --wait waits at most (default %d)"
             % DEFAULT_WAIT_TIMEOUT)


def build_parser():
    """Build the ``livesnap`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="livesnap",
        description="Client of the livesnap online snapshot service.")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)

    groups = parser.add_subparsers(dest="group", metavar="GROUP",
                                   required=True)

    def command(subparsers, name, func, help_):
        sub = subparsers.add_parser(name, parents=[common], help=help_,
                                    description=help_)
        sub.set_defaults(func=func)
        return sub

    def wait_option(sub):
        sub.add_argument("--wait", action="store_true",
                         help="wait for the operation to finish")

    # server
    server = groups.add_parser("server", help="servers and their disks")
    server_cmds = server.add_subparsers(dest="command", metavar="COMMAND",
                                        required=True)
    command(server_cmds, "list", cmd_server_list, "list servers")
    sub = command(server_cmds, "show", cmd_server_show,
                  "show a server and its disks")
    sub.add_argument("server_id", metavar="ID")
    sub = command(server_cmds, "create", cmd_server_create,
                  "register a server (admin)")
    sub.add_argument("--id", required=True)
    sub.add_argument("--name", required=True)
    sub.add_argument("--project", required=True, help="project id")
    sub.add_argument("--host", required=True, help="hypervisor host")
    sub.add_argument("--qmp-socket", metavar="PATH",
                     help="QMP socket of the running QEMU")
    sub.add_argument("--disk", dest="disks", action="append",
                     type=_parse_disk, required=True, metavar="NAME=PATH",
                     help="a disk and its active image (repeatable)")

    # host
    host = groups.add_parser("host", help="hypervisor hosts (admin)")
    host_cmds = host.add_subparsers(dest="command", metavar="COMMAND",
                                    required=True)
    command(host_cmds, "list", cmd_host_list,
            "list hosts and whether their agents report")

    # snapshot
    snapshot = groups.add_parser("snapshot", help="disk snapshots")
    snap_cmds = snapshot.add_subparsers(dest="command", metavar="COMMAND",
                                        required=True)
    sub = command(snap_cmds, "create", cmd_snapshot_create,
                  "take an online snapshot of a disk")
    sub.add_argument("server_id", metavar="SERVER")
    sub.add_argument("--disk", required=True, help="disk name, e.g. vda")
    sub.add_argument("--name", required=True, help="snapshot name")
    wait_option(sub)
    sub = command(snap_cmds, "list", cmd_snapshot_list,
                  "list the snapshots of a server")
    sub.add_argument("server_id", metavar="SERVER")
    sub.add_argument("--tree", action="store_true",
                     help="draw the snapshot trees (includes deleted nodes)")
    sub.add_argument("--all", action="store_true",
                     help="include logically deleted snapshots")
    sub.add_argument("--ascii", action="store_true",
                     help="draw the tree with ASCII characters only")
    sub = command(snap_cmds, "show", cmd_snapshot_show, "show a snapshot")
    sub.add_argument("snapshot_id", metavar="ID")
    sub = command(snap_cmds, "delete", cmd_snapshot_delete,
                  "delete a snapshot")
    sub.add_argument("snapshot_id", metavar="ID")
    wait_option(sub)
    sub = command(snap_cmds, "revert", cmd_snapshot_revert,
                  "revert a disk to a snapshot (server shut off)")
    sub.add_argument("snapshot_id", metavar="ID")
    wait_option(sub)

    # operation
    operation = groups.add_parser("operation", help="snapshot operations")
    op_cmds = operation.add_subparsers(dest="command", metavar="COMMAND",
                                       required=True)
    sub = command(op_cmds, "show", cmd_operation_show,
                  "show an operation and its steps")
    sub.add_argument("operation_id", metavar="ID")
    sub = command(op_cmds, "cancel", cmd_operation_cancel,
                  "cancel a merge that is still copying (admin)")
    sub.add_argument("operation_id", metavar="ID")
    wait_option(sub)
    sub = command(op_cmds, "list", cmd_operation_list, "list operations")
    sub.add_argument("--server", metavar="ID",
                     help="only the operations of this server")
    return parser


def main(argv=None, stdout=None, stderr=None):
    """Run the ``livesnap`` command.

    :param argv: arguments without the program name (default ``sys.argv``).
    :returns: the exit status (0 ok, 1 error or failed operation,
        2 usage error or ``--wait`` timeout).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    args = build_parser().parse_args(argv)
    client = ApiClient(args.url, args.token)
    out = Output(args.format, stdout, stderr)
    try:
        return args.func(client, args, out)
    except CLIError as exc:
        print(str(exc), file=stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("Interrupted.", file=stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
