"""Tests of the ``livesnap`` command and of ``openstack livesnap`` against
a stub REST API (and a stub keystone).

The stub is a real ``http.server`` in a thread: each test registers canned
answers per (method, path) and checks the requests the CLI sent and what it
printed. ``livesnap`` runs in-process; ``openstack`` (python-openstackclient
with the plugin) as a subprocess.
"""

import http.server
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.parse

import pytest

from livesnapclient import format as fmt
from livesnapclient import shell
from livesnapclient import wait

TOKEN = "secret-token"


class StubAPI:
    """Canned answers per (method, path-with-query), and recorded requests.

    A route holds a list of ``(status, body[, headers])``; each request
    consumes the first one and the last one repeats, so a sequence of poll
    answers is one list.
    """

    def __init__(self):
        self.routes = {}
        self.requests = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                stub.requests.append({
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": json.loads(raw) if raw else None,
                })
                answers = stub.routes.get((self.command, self.path))
                headers = {}
                if not answers:
                    status, body = 404, {"error": {
                        "code": "not_found", "message": "no route %s %s"
                        % (self.command, self.path)}}
                else:
                    answer = (answers.pop(0) if len(answers) > 1
                              else answers[0])
                    status, body = answer[:2]
                    headers = answer[2] if len(answer) > 2 else {}
                data = (body if isinstance(body, bytes)
                        else json.dumps(body).encode())
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def add(self, method, path, *answers):
        """Register answers ``(status, body[, headers])`` for ``method path``.
        """
        self.routes[(method, path)] = list(answers)

    def last(self):
        return self.requests[-1]


@pytest.fixture
def api(monkeypatch):
    stub = StubAPI()
    stub.thread.start()
    monkeypatch.setenv("LIVESNAP_URL", stub.url)
    monkeypatch.setenv("LIVESNAP_TOKEN", TOKEN)
    for name in ("OS_CLOUD", "OS_AUTH_URL", "OS_REGION_NAME",
                 "OS_INTERFACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(wait, "POLL_INTERVAL", 0.01)
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def run(capsys, *argv):
    """Run the CLI; return (exit status, stdout, stderr)."""
    rc = shell.main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


SERVER = {
    "id": "srv1", "name": "web", "project_id": "p1", "host": "hv1",
    "qmp_socket": "/run/qmp-srv1.sock",
    "disks": [{"name": "vda", "active_image": "/img/vda.active.qcow2",
               "snapshot_id": "snap-c", "busy": False}],
}


def snap(sid, name, parent, status="available", size=1048576,
         disk="vda", current=False, created="2024-01-01T00:00:00Z"):
    return {"id": sid, "name": name, "server_id": "srv1", "disk": disk,
            "parent_id": parent, "status": status, "created_at": created,
            "size_bytes": size, "current": current}


def op(oid="op-1", status="pending", action="create", mode=None,
       progress=None, error=None, steps=()):
    return {"id": oid, "action": action, "status": status, "mode": mode,
            "server_id": "srv1", "disk": "vda", "snapshot_id": "snap-1",
            "pause_ms": 12.5 if status == "succeeded" else None,
            "progress": progress, "steps": list(steps), "error": error,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:01Z"}


# ---------------------------------------------------------------- servers

def test_server_list_table_sends_token(api, capsys):
    api.add("GET", "/v1/servers", (200, {"servers": [SERVER]}))
    rc, out, err = run(capsys, "server", "list")
    assert rc == 0, err
    req = api.last()
    assert req["method"] == "GET" and req["path"] == "/v1/servers"
    assert req["headers"]["X-Auth-Token"] == TOKEN
    assert "| srv1 | web  | p1      | hv1  | vda   |" in out


def test_client_sends_the_microversion_it_was_written_for(api, capsys):
    from livesnapclient import client
    api.add("GET", "/v1/servers", (200, {"servers": []}))
    rc, _, err = run(capsys, "server", "list")
    assert rc == 0, err
    assert api.last()["headers"]["OpenStack-API-Version"] == \
        "livesnap %s" % client.API_VERSION


def test_host_list(api, capsys):
    host = {"name": "hv1", "state": "down",
            "last_heartbeat": "2026-11-25T00:00:00Z",
            "agent_started_at": None, "image_dirs": ["/img"],
            "version": "0.1.0"}
    api.add("GET", "/v1/hosts", (200, {"hosts": [host]}))
    rc, out, err = run(capsys, "host", "list")
    assert rc == 0, err
    assert api.last()["path"] == "/v1/hosts"
    assert "hv1" in out and "down" in out and "/img" in out


def test_server_list_json(api, capsys):
    api.add("GET", "/v1/servers", (200, {"servers": [SERVER]}))
    rc, out, _ = run(capsys, "-f", "json", "server", "list")
    assert rc == 0
    assert json.loads(out) == [{"ID": "srv1", "Name": "web", "Project": "p1",
                                "Host": "hv1", "Disks": ["vda"]}]


def test_server_list_follows_next_links(api, capsys):
    second = dict(SERVER, id="srv2", name="db")
    api.add("GET", "/v1/servers", (200, {
        "servers": [SERVER], "servers_links": [{
            "rel": "next",
            "href": "https://proxy.example.org/v1/servers?limit=1"
                    "&marker=srv1"}]}))
    api.add("GET", "/v1/servers?limit=1&marker=srv1",
            (200, {"servers": [second]}))
    rc, out, _ = run(capsys, "-f", "json", "server", "list")
    assert rc == 0
    assert [s["ID"] for s in json.loads(out)] == ["srv1", "srv2"]
    # The next page is asked of the same endpoint, not the link's host.
    assert api.last()["path"] == "/v1/servers?limit=1&marker=srv1"


def test_format_and_columns_after_the_command(api, capsys):
    api.add("GET", "/v1/servers", (200, {"servers": [SERVER]}))
    rc, out, _ = run(capsys, "server", "list", "-f", "json", "-c", "ID",
                     "-c", "Disks")
    assert rc == 0
    assert json.loads(out) == [{"ID": "srv1", "Disks": ["vda"]}]
    rc, out, _ = run(capsys, "server", "list", "-f", "value", "-c", "Name")
    assert (rc, out) == (0, "web\n")
    rc, out, _ = run(capsys, "server", "list", "-f", "csv")
    assert out.splitlines()[0] == '"ID","Name","Project","Host","Disks"'
    rc, out, _ = run(capsys, "server", "list", "-f", "yaml")
    assert "- Disks:\n  - vda\n" in out


def test_show_json_keeps_api_values(api, capsys):
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", None)}))
    rc, out, _ = run(capsys, "snapshot", "show", "snap-1", "-f", "json")
    assert rc == 0
    assert json.loads(out) == snap("snap-1", "s1", None)
    rc, out, _ = run(capsys, "snapshot", "show", "snap-1", "-f", "value",
                     "-c", "size_bytes", "-c", "parent_id")
    # value, like json, prints the API values, in the columns' order
    assert out.splitlines() == ["None", "1048576"]


def test_global_options_after_command_and_explicit_url(api, capsys,
                                                       monkeypatch):
    monkeypatch.delenv("LIVESNAP_URL")
    monkeypatch.delenv("LIVESNAP_TOKEN")
    api.add("GET", "/v1/servers/srv1", (200, {"server": SERVER}))
    rc, out, _ = run(capsys, "--url", api.url, "server", "show", "srv1",
                     "--token", "t2", "-f", "json")
    assert rc == 0
    assert json.loads(out) == SERVER
    assert api.last()["headers"]["X-Auth-Token"] == "t2"


def test_no_token_sends_no_header(api, capsys, monkeypatch):
    monkeypatch.delenv("LIVESNAP_TOKEN")
    api.add("GET", "/v1/servers", (200, {"servers": []}))
    rc, _, _ = run(capsys, "server", "list")
    assert rc == 0
    assert "X-Auth-Token" not in api.last()["headers"]


def test_server_show_table_includes_disks(api, capsys):
    api.add("GET", "/v1/servers/srv1", (200, {"server": SERVER}))
    rc, out, _ = run(capsys, "server", "show", "srv1")
    assert rc == 0
    assert "| qmp_socket | /run/qmp-srv1.sock " in out
    assert ("| disks      | vda: snapshot snap-c, busy no, active image "
            "/img/vda.active.qcow2 |") in out
    rc, out, _ = run(capsys, "server", "show", "srv1", "-f", "json")
    assert json.loads(out) == SERVER


#: What a tenant (no host details) gets for SERVER.
TENANT_SERVER = {"id": "srv1", "name": "web", "project_id": "p1",
                 "created_at": None,
                 "disks": [{"name": "vda", "snapshot_id": "snap-c",
                            "busy": False}]}


def test_server_list_and_show_without_host_details(api, capsys):
    api.add("GET", "/v1/servers", (200, {"servers": [TENANT_SERVER]}))
    rc, out, err = run(capsys, "server", "list")
    assert rc == 0, err
    assert "Host" not in out
    assert "| srv1 | web  | p1      | vda   |" in out
    api.add("GET", "/v1/servers/srv1", (200, {"server": TENANT_SERVER}))
    rc, out, err = run(capsys, "server", "show", "srv1")
    assert rc == 0, err
    assert "qmp_socket" not in out and "| host" not in out
    assert "active image" not in out
    assert "| disks      | vda: snapshot snap-c, busy no |" in out


def test_server_create_posts_body(api, capsys):
    api.add("POST", "/v1/servers", (201, {"server": SERVER}))
    rc, out, _ = run(capsys, "server", "create", "--id", "srv1", "--name",
                     "web", "--project", "p1", "--host", "hv1",
                     "--qmp-socket", "/run/qmp-srv1.sock",
                     "--disk", "vda=/img/vda.qcow2",
                     "--disk", "vdb=/img/b=c.qcow2")
    assert rc == 0
    req = api.last()
    assert (req["method"], req["path"]) == ("POST", "/v1/servers")
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["body"] == {"server": {
        "id": "srv1", "name": "web", "project_id": "p1", "host": "hv1",
        "qmp_socket": "/run/qmp-srv1.sock",
        "disks": [{"name": "vda", "path": "/img/vda.qcow2"},
                  {"name": "vdb", "path": "/img/b=c.qcow2"}]}}
    assert "| id         | srv1" in out


def test_server_create_without_qmp_socket_omits_it(api, capsys):
    api.add("POST", "/v1/servers", (201, {"server": SERVER}))
    rc, _, _ = run(capsys, "server", "create", "--id", "srv1", "--name",
                   "web", "--project", "p1", "--host", "hv1",
                   "--disk", "vda=/img/vda.qcow2")
    assert rc == 0
    assert "qmp_socket" not in api.last()["body"]["server"]


def test_server_create_rejects_bad_disk_spec(api, capsys):
    with pytest.raises(SystemExit) as exc:
        shell.main(["server", "create", "--id", "s", "--name", "n",
                    "--project", "p", "--host", "h", "--disk", "vda"])
    assert exc.value.code == 2
    assert "NAME=PATH" in capsys.readouterr().err
    assert api.requests == []


# ---------------------------------------------------------------- snapshots

def test_snapshot_create_without_wait(api, capsys):
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": snap("snap-1", "s1", None, "creating",
                                    size=None),
                   "operation": op()}))
    rc, out, _ = run(capsys, "snapshot", "create", "srv1", "--disk", "vda",
                     "--name", "s1")
    assert rc == 0
    req = api.last()
    assert (req["method"], req["path"]) == ("POST",
                                            "/v1/servers/srv1/snapshots")
    assert req["body"] == {"snapshot": {"name": "s1", "disk": "vda"}}
    assert req["headers"]["X-Auth-Token"] == TOKEN
    assert "| status     | creating" in out
    assert "| operation  | op-1 (pending) " in out


def test_snapshot_create_quiesce_shows_consistency(api, capsys):
    created = dict(snap("snap-1", "s1", None, "creating", size=None),
                   consistency="application",
                   consistency_reason="frozen by the guest agent")
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": created, "operation": op()}))
    rc, out, _ = run(capsys, "snapshot", "create", "srv1", "--disk", "vda",
                     "--name", "s1", "--quiesce", "required")
    assert rc == 0
    assert api.last()["body"] == {"snapshot": {
        "name": "s1", "disk": "vda", "quiesce": "required"}}
    assert "| consistency " in out and "application" in out
    with pytest.raises(SystemExit) as exc:
        run(capsys, "snapshot", "create", "srv1", "--disk", "vda",
            "--name", "s1", "--quiesce", "sometimes")
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_snapshot_create_json(api, capsys):
    body = {"snapshot": snap("snap-1", "s1", None, "creating"),
            "operation": op()}
    api.add("POST", "/v1/servers/srv1/snapshots", (202, body))
    rc, out, _ = run(capsys, "-f", "json", "snapshot", "create", "srv1",
                     "--disk", "vda", "--name", "s1")
    assert rc == 0
    assert json.loads(out) == dict(body["snapshot"],
                                   operation=body["operation"])


def test_snapshot_create_wait_succeeds(api, capsys):
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": snap("snap-1", "s1", None, "creating"),
                   "operation": op(status="pending")}))
    steps = [{"name": "precreate_overlay", "status": "succeeded",
              "started_at": "2024-01-01T00:00:00Z", "duration_ms": 40.0},
             {"name": "pause", "status": "succeeded",
              "started_at": "2024-01-01T00:00:00Z", "duration_ms": 12.5}]
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(status="pending")}),
            (200, {"operation": op(status="running")}),
            (200, {"operation": op(status="succeeded", steps=steps)}))
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", None, size=2 * 1024**3,
                                    current=True)}))
    rc, out, err = run(capsys, "snapshot", "create", "srv1", "--disk",
                       "vda", "--name", "s1", "--wait")
    assert rc == 0, err
    polls = [r for r in api.requests if r["path"] == "/v1/operations/op-1"]
    assert len(polls) == 3
    assert all(r["method"] == "GET" for r in polls)
    assert "Operation op-1: running" in err
    assert "Operation op-1: succeeded" in err
    assert "| status     | available" in out
    assert "2147483648 (2.0 GiB)" in out
    assert "| operation  | op-1 (succeeded) " in out
    assert "|            | guest I/O paused for 12.5 ms " in out
    assert "|            | precreate_overlay  succeeded  40 ms " in out
    assert "|            | pause              succeeded  12.5 ms " in out


def test_snapshot_create_wait_json_prints_final_objects(api, capsys):
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": snap("snap-1", "s1", None, "creating"),
                   "operation": op(status="pending")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(status="succeeded")}))
    final_snap = snap("snap-1", "s1", None, current=True)
    api.add("GET", "/v1/snapshots/snap-1", (200, {"snapshot": final_snap}))
    rc, out, _ = run(capsys, "-f", "json", "snapshot", "create", "srv1",
                     "--disk", "vda", "--name", "s1", "--wait")
    assert rc == 0
    assert json.loads(out) == dict(final_snap,
                                   operation=op(status="succeeded"))


def test_snapshot_create_wait_failure(api, capsys):
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": snap("snap-1", "s1", None, "creating"),
                   "operation": op(status="pending")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(status="running")}),
            (200, {"operation": op(status="failed",
                                   error="blockdev-add: disk full")}))
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", None, "error")}))
    rc, out, err = run(capsys, "snapshot", "create", "srv1", "--disk",
                       "vda", "--name", "s1", "--wait")
    assert rc == 1
    assert "| status     | error" in out
    assert "| operation  | op-1 (failed) " in out
    assert "|            | error: blockdev-add: disk full " in out
    assert "Error: operation op-1 failed: blockdev-add: disk full" in err


def test_wait_timeout_exits_2(api, capsys):
    api.add("DELETE", "/v1/snapshots/snap-1",
            (202, {"operation": op(action="delete", mode="merge",
                                   status="running")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="delete", mode="merge",
                                   status="running", progress=10.0)}))
    rc, out, err = run(capsys, "snapshot", "delete", "snap-1", "--wait",
                       "--timeout", "0.1")
    assert rc == 2
    assert "Error: timed out after 0.1 s waiting for operation op-1" in err
    assert "| status" not in out


def test_wait_prints_progress_of_merges(api, capsys):
    api.add("DELETE", "/v1/snapshots/snap-1",
            (202, {"operation": op(action="delete", mode="merge")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="delete", mode="merge",
                                   status="running", progress=25.0)}),
            (200, {"operation": op(action="delete", mode="merge",
                                   status="running", progress=75.5)}),
            (200, {"operation": op(action="delete", mode="merge",
                                   status="succeeded", progress=100.0)}))
    rc, out, err = run(capsys, "snapshot", "delete", "snap-1", "--wait")
    assert rc == 0
    assert "Operation op-1: running (25.0%)" in err
    assert "Operation op-1: running (75.5%)" in err
    assert "Deleting snapshot snap-1: mode merge, operation op-1" in out
    assert "| status      | succeeded" in out


def test_snapshot_list_table(api, capsys):
    api.add("GET", "/v1/servers/srv1/snapshots",
            (200, {"snapshots": [snap("snap-aaaa", "base", None,
                                      current=True)]}))
    rc, out, _ = run(capsys, "snapshot", "list", "srv1")
    assert rc == 0
    assert api.last()["path"] == "/v1/servers/srv1/snapshots"
    assert "| snap-aaaa | base | vda  | -      | available | 1.0 MiB |" in out


def test_snapshot_list_table_groups_disks(api, capsys):
    api.add("GET", "/v1/servers/srv1/snapshots",
            (200, {"snapshots": [
                snap("s3", "late", None, created="2024-01-03T00:00:00Z"),
                snap("s2", "data", None, disk="vdb",
                     created="2024-01-01T00:00:00Z"),
                snap("s1", "early", None, created="2024-01-02T00:00:00Z")]}))
    rc, out, _ = run(capsys, "snapshot", "list", "srv1")
    assert rc == 0
    rows = [line.split("|")[2].strip() for line in out.splitlines()
            if line.startswith("| s")]
    assert rows == ["early", "late", "data"]


def test_snapshot_list_all_includes_deleted(api, capsys):
    snaps = [snap("snap-aaaa", "base", None, status="deleted")]
    api.add("GET", "/v1/servers/srv1/snapshots?include_deleted=true",
            (200, {"snapshots": snaps}))
    rc, out, _ = run(capsys, "-f", "json", "snapshot", "list", "srv1",
                     "--all")
    assert rc == 0
    assert api.last()["path"] == \
        "/v1/servers/srv1/snapshots?include_deleted=true"
    assert json.loads(out) == [{
        "ID": "snap-aaaa", "Name": "base", "Disk": "vda", "Parent": None,
        "Status": "deleted", "Size": 1048576,
        "Created": "2024-01-01T00:00:00Z", "Current": False}]


TREE = [
    # vda: base -> (a -> a1, b (deleted) -> (b1 current, b2)); second root r.
    snap("aaaaaaaa-1111", "base", None, size=10 * 1024**3,
         created="2024-01-01T00:00:00Z"),
    snap("bbbbbbbb-2222", "a", "aaaaaaaa-1111", size=512 * 1024,
         created="2024-01-02T00:00:00Z"),
    snap("cccccccc-3333", "b", "aaaaaaaa-1111", status="deleted",
         size=3 * 1024**2, created="2024-01-03T00:00:00Z"),
    snap("dddddddd-4444", "a1", "bbbbbbbb-2222", size=None,
         status="creating", created="2024-01-04T00:00:00Z"),
    snap("eeeeeeee-5555", "b1", "cccccccc-3333", size=100,
         current=True, created="2024-01-05T00:00:00Z"),
    snap("ffffffff-6666", "b2", "cccccccc-3333", size=2048,
         created="2024-01-06T00:00:00Z"),
    # parent not in the list: a root of its own
    snap("99999999-7777", "orphan", "gone-0000", size=1,
         created="2024-01-07T00:00:00Z"),
    # another disk: another tree
    snap("12345678-8888", "data0", None, disk="vdb", size=0),
]


def test_snapshot_list_tree_unicode(api, capsys):
    # listed out of order on purpose: the tree sorts by creation time
    api.add("GET", "/v1/servers/srv1/snapshots?include_deleted=true",
            (200, {"snapshots": list(reversed(TREE))}))
    rc, out, _ = run(capsys, "snapshot", "list", "srv1", "--tree")
    assert rc == 0
    assert api.last()["path"] == \
        "/v1/servers/srv1/snapshots?include_deleted=true"
    assert out.splitlines() == [
        "Disk vda:",
        "base [aaaaaaaa] available 10.0 GiB",
        "├── a [bbbbbbbb] available 512.0 KiB",
        "│   └── a1 [dddddddd] creating -",
        "└── b [cccccccc] (deleted) 3.0 MiB",
        "    ├── b1 [eeeeeeee] available 100 B  <- current",
        "    └── b2 [ffffffff] available 2.0 KiB",
        "orphan [99999999] available 1 B",
        "",
        "Disk vdb:",
        "data0 [12345678] available 0 B",
    ]


def test_snapshot_list_tree_ascii(api, capsys):
    api.add("GET", "/v1/servers/srv1/snapshots?include_deleted=true",
            (200, {"snapshots": TREE[:6]}))
    rc, out, _ = run(capsys, "snapshot", "list", "srv1", "--tree",
                     "--ascii")
    assert rc == 0
    assert out.splitlines() == [
        "Disk vda:",
        "base [aaaaaaaa] available 10.0 GiB",
        "+- a [bbbbbbbb] available 512.0 KiB",
        "|  `- a1 [dddddddd] creating -",
        "`- b [cccccccc] (deleted) 3.0 MiB",
        "   +- b1 [eeeeeeee] available 100 B  <- current",
        "   `- b2 [ffffffff] available 2.0 KiB",
    ]


def test_tree_survives_parent_cycle():
    cyc = [snap("x", "x", "y"), snap("y", "y", "x")]
    lines = fmt.draw_tree(cyc, fmt.ASCII_TREE)
    assert lines[0] == "Disk vda:"
    assert sum("x [x]" in line for line in lines) == 1
    assert sum("y [y]" in line for line in lines) == 1


def test_snapshot_show(api, capsys):
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", "snap-0")}))
    rc, out, _ = run(capsys, "snapshot", "show", "snap-1")
    assert rc == 0
    assert api.last()["method"] == "GET"
    assert "| parent_id  | snap-0" in out
    assert "1048576 (1.0 MiB)" in out


def test_snapshot_show_fields_of_newer_apis_when_given(api, capsys):
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": dict(snap("snap-1", "s1", None),
                                    protected=True, policy_id=None)}))
    rc, out, _ = run(capsys, "snapshot", "show", "snap-1")
    assert rc == 0
    assert "| protected  | yes " in out
    assert "| policy_id  | -  " in out


def test_snapshot_delete_prints_mode(api, capsys):
    api.add("DELETE", "/v1/snapshots/snap-1",
            (202, {"operation": op(action="delete", mode="logical",
                                   status="succeeded")}))
    rc, out, _ = run(capsys, "snapshot", "delete", "snap-1")
    assert rc == 0
    req = api.last()
    assert (req["method"], req["path"]) == ("DELETE", "/v1/snapshots/snap-1")
    assert req["headers"]["X-Auth-Token"] == TOKEN
    assert "Deleting snapshot snap-1: mode logical, operation op-1" in out
    assert "| mode        | logical" in out


def test_snapshot_delete_json(api, capsys):
    operation = op(action="delete", mode="physical")
    api.add("DELETE", "/v1/snapshots/snap-1", (202, {"operation": operation}))
    rc, out, _ = run(capsys, "-f", "json", "snapshot", "delete", "snap-1")
    assert rc == 0
    assert json.loads(out) == operation


def test_snapshot_revert_wait(api, capsys):
    api.add("POST", "/v1/snapshots/snap-1/revert",
            (202, {"operation": op(action="revert")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="revert", status="running")}),
            (200, {"operation": op(action="revert", status="succeeded")}))
    rc, out, err = run(capsys, "snapshot", "revert", "snap-1", "--wait")
    assert rc == 0, err
    assert api.requests[0]["method"] == "POST"
    assert api.requests[0]["path"] == "/v1/snapshots/snap-1/revert"
    assert api.requests[0]["body"] is None
    assert "Reverting to snapshot snap-1: operation op-1" in out
    assert "| status      | succeeded" in out


def test_snapshot_revert_conflict(api, capsys):
    api.add("POST", "/v1/snapshots/snap-1/revert",
            (409, {"error": {"code": "conflict",
                             "message": "server srv1 is running"}}))
    rc, out, err = run(capsys, "snapshot", "revert", "snap-1")
    assert rc == 1
    assert out == ""
    assert err.strip() == \
        "Error (HTTP 409 conflict): server srv1 is running"


def test_snapshot_clone_wait(api, capsys):
    api.add("POST", "/v1/snapshots/snap-1/clone",
            (202, {"operation": op(action="clone")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="clone", status="succeeded")}))
    rc, out, err = run(capsys, "snapshot", "clone", "snap-1", "--disk",
                       "vdb", "--mode", "linked", "--server", "srv2",
                       "--wait")
    assert rc == 0, err
    assert api.requests[0]["path"] == "/v1/snapshots/snap-1/clone"
    assert api.requests[0]["body"] == {"clone": {
        "mode": "linked", "disk": "vdb", "server_id": "srv2"}}
    assert "Cloning snapshot snap-1 into disk vdb: operation op-1" in out


# ---------------------------------------------------------------- operations

def test_operation_show_table_with_steps(api, capsys):
    steps = [{"name": "stop", "status": "succeeded",
              "started_at": "2024-01-01T00:00:00Z", "duration_ms": 1.25},
             {"name": "blockdev_snapshot", "status": "succeeded",
              "started_at": "2024-01-01T00:00:00Z", "duration_ms": 8.0}]
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(status="succeeded", steps=steps)}))
    rc, out, _ = run(capsys, "operation", "show", "op-1")
    assert rc == 0
    assert "| pause_ms    | 12.5 " in out
    assert "| action      | create " in out
    assert "| steps       | stop               succeeded  1.25 ms |" in out
    assert "|             | blockdev_snapshot  succeeded  8 ms    |" in out


def test_operation_show_json(api, capsys):
    operation = op(status="failed", error="boom")
    api.add("GET", "/v1/operations/op-1", (200, {"operation": operation}))
    rc, out, _ = run(capsys, "--format", "json", "operation", "show", "op-1")
    assert rc == 0
    assert json.loads(out) == operation


def test_operation_cancel_wait(api, capsys):
    api.add("POST", "/v1/operations/op-1/cancel",
            (202, {"operation": op(action="delete", status="running")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="delete", status="failed",
                                   error="The merge was cancelled")}))
    rc, out, err = run(capsys, "operation", "cancel", "op-1", "--wait")
    assert rc == 1   # the operation ended failed, as it should
    assert api.requests[0]["method"] == "POST"
    assert api.requests[0]["path"] == "/v1/operations/op-1/cancel"
    assert "Cancelling operation op-1" in out
    assert "cancelled" in err


def test_operation_list_filters_by_server(api, capsys):
    api.add("GET", "/v1/operations?server_id=srv1",
            (200, {"operations": [op(status="succeeded")]}))
    rc, out, _ = run(capsys, "operation", "list", "--server", "srv1")
    assert rc == 0
    assert api.last()["path"] == "/v1/operations?server_id=srv1"
    assert "| op-1 | create | succeeded | -    | srv1" in out


def test_operation_list_all(api, capsys):
    api.add("GET", "/v1/operations", (200, {"operations": []}))
    rc, out, _ = run(capsys, "operation", "list")
    assert rc == 0
    assert api.last()["path"] == "/v1/operations"
    assert out.strip() == ""   # an empty list prints nothing, as in OSC


# ---------------------------------------------------------------- errors

def test_not_found_error(api, capsys):
    api.add("GET", "/v1/snapshots/nope",
            (404, {"error": {"code": "not_found",
                             "message": "snapshot nope not found"}}))
    rc, out, err = run(capsys, "snapshot", "show", "nope")
    assert rc == 1
    assert out == ""
    assert "Error (HTTP 404 not_found): snapshot nope not found" in err


def test_error_shows_the_request_id(api, capsys):
    api.add("GET", "/v1/snapshots/nope",
            (404, {"error": {"code": "not_found",
                             "message": "snapshot nope not found"}},
             {"x-openstack-request-id": "req-1234"}))
    rc, out, err = run(capsys, "snapshot", "show", "nope")
    assert rc == 1
    assert err.strip() == ("Error (HTTP 404 not_found): snapshot nope not "
                           "found (request req-1234)")


def test_error_without_json_body(api, capsys):
    api.add("GET", "/v1/servers", (503, b"upstream down"))
    rc, _, err = run(capsys, "server", "list")
    assert rc == 1
    assert "Error (HTTP 503 Service Unavailable): upstream down" in err


def test_error_while_waiting(api, capsys):
    api.add("POST", "/v1/snapshots/snap-1/revert",
            (202, {"operation": op(action="revert")}))
    api.add("GET", "/v1/operations/op-1",
            (401, {"error": {"code": "unauthorized",
                             "message": "token expired"}}))
    rc, _, err = run(capsys, "snapshot", "revert", "snap-1", "--wait")
    assert rc == 1
    assert "Error (HTTP 401 unauthorized): token expired" in err


def test_connection_refused(capsys, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = "http://127.0.0.1:%d" % port
    rc, out, err = run(capsys, "--url", url, "server", "list")
    assert rc == 1
    assert out == ""
    assert "cannot connect to the livesnap API at %s" % url in err


def test_missing_command_is_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        shell.main([])
    assert exc.value.code == 2


# ---------------------------------------------------------------- helpers

@pytest.mark.parametrize("size,text", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
    (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**5, "3072.0 TiB"),
])
def test_human_size(size, text):
    assert fmt.human_size(size) == text


def test_path_segments_are_quoted(api, capsys):
    api.add("GET", "/v1/snapshots/a%2Fb%20c",
            (200, {"snapshot": snap("a/b c", "s", None)}))
    rc, _, _ = run(capsys, "snapshot", "show", "a/b c")
    assert rc == 0
    assert urllib.parse.unquote(api.last()["path"]) == "/v1/snapshots/a/b c"


# ---------------------------------------------------------------- keystone

KS_TOKEN = "ks-issued-token"


def keystone(api, catalog_url):
    """Make the stub a keystone v3 too, whose catalog has livesnap at
    ``catalog_url`` (region RegionOne, public interface).
    """
    api.add("GET", "/v3", (200, {"version": {
        "id": "v3.14", "status": "stable",
        "links": [{"rel": "self", "href": api.url + "/v3/"}]}}))
    domain = {"id": "default", "name": "Default"}
    api.add("POST", "/v3/auth/tokens", (201, {"token": {
        "methods": ["password"],
        "expires_at": "2099-01-01T00:00:00.000000Z",
        "issued_at": "2024-01-01T00:00:00.000000Z",
        "user": {"id": "u1", "name": "demo", "domain": domain},
        "project": {"id": "p1", "name": "demo", "domain": domain},
        "roles": [{"id": "r1", "name": "member"}],
        "catalog": [{"type": "livesnap", "id": "svc1", "name": "livesnap",
                     "endpoints": [{"id": "e1", "interface": "public",
                                    "region": "RegionOne",
                                    "region_id": "RegionOne",
                                    "url": catalog_url}]}]}},
        {"X-Subject-Token": KS_TOKEN}))


def _password_request(api):
    auth = [r for r in api.requests if r["path"] == "/v3/auth/tokens"]
    assert auth, api.requests
    return auth[0]["body"]["auth"]["identity"]["password"]["user"]


@pytest.mark.parametrize("suffix", ["", "/v1/"])
def test_keystone_from_os_variables_and_the_catalog(api, capsys,
                                                    monkeypatch, suffix):
    monkeypatch.delenv("LIVESNAP_URL")
    monkeypatch.delenv("LIVESNAP_TOKEN")
    keystone(api, api.url + suffix)
    for name, value in (("OS_AUTH_URL", api.url + "/v3"),
                        ("OS_USERNAME", "demo"), ("OS_PASSWORD", "pw"),
                        ("OS_PROJECT_NAME", "demo"),
                        ("OS_USER_DOMAIN_NAME", "Default"),
                        ("OS_PROJECT_DOMAIN_NAME", "Default")):
        monkeypatch.setenv(name, value)
    api.add("GET", "/v1/servers", (200, {"servers": [SERVER]}))
    rc, out, err = run(capsys, "server", "list", "-f", "value", "-c", "ID")
    assert rc == 0, err
    assert out == "srv1\n"
    assert _password_request(api)["name"] == "demo"
    req = api.last()
    assert req["path"] == "/v1/servers"
    assert req["headers"]["X-Auth-Token"] == KS_TOKEN


def test_keystone_from_clouds_yaml(api, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("LIVESNAP_URL")
    monkeypatch.delenv("LIVESNAP_TOKEN")
    keystone(api, api.url)
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  mycloud:\n"
        "    auth:\n"
        "      auth_url: %s/v3\n"
        "      username: operator\n"
        "      password: pw\n"
        "      project_name: demo\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
        "    region_name: RegionOne\n" % api.url)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", None)}))
    rc, out, err = run(capsys, "--os-cloud", "mycloud", "snapshot", "show",
                       "snap-1", "-f", "json")
    assert rc == 0, err
    assert json.loads(out)["id"] == "snap-1"
    assert _password_request(api)["name"] == "operator"
    assert api.last()["headers"]["X-Auth-Token"] == KS_TOKEN


def test_keystone_catalog_without_livesnap(api, capsys, monkeypatch,
                                           tmp_path):
    monkeypatch.delenv("LIVESNAP_URL")
    monkeypatch.delenv("LIVESNAP_TOKEN")
    keystone(api, api.url)
    body = api.routes[("POST", "/v3/auth/tokens")][0][1]
    body["token"]["catalog"][0]["type"] = "something-else"
    for name, value in (("OS_AUTH_URL", api.url + "/v3"),
                        ("OS_USERNAME", "demo"), ("OS_PASSWORD", "pw"),
                        ("OS_PROJECT_NAME", "demo"),
                        ("OS_USER_DOMAIN_NAME", "Default"),
                        ("OS_PROJECT_DOMAIN_NAME", "Default")):
        monkeypatch.setenv(name, value)
    rc, out, err = run(capsys, "server", "list")
    assert rc == 1
    assert "no endpoint of service type 'livesnap'" in err


def test_keystone_rejects_the_password(api, capsys, monkeypatch):
    monkeypatch.delenv("LIVESNAP_URL")
    monkeypatch.delenv("LIVESNAP_TOKEN")
    keystone(api, api.url)
    api.add("POST", "/v3/auth/tokens",
            (401, {"error": {"code": 401, "title": "Unauthorized",
                             "message": "The request you have made "
                                        "requires authentication."}}))
    for name, value in (("OS_AUTH_URL", api.url + "/v3"),
                        ("OS_USERNAME", "demo"), ("OS_PASSWORD", "bad"),
                        ("OS_PROJECT_NAME", "demo"),
                        ("OS_USER_DOMAIN_NAME", "Default"),
                        ("OS_PROJECT_DOMAIN_NAME", "Default")):
        monkeypatch.setenv(name, value)
    rc, out, err = run(capsys, "server", "list")
    assert rc == 1
    assert out == ""
    assert "Error: authentication failed" in err


# ---------------------------------------------------------------- openstack

def _entry_points(group):
    return {ep.name: ep.value
            for ep in importlib.metadata.entry_points(group=group)}


def test_openstack_plugin_and_livesnap_run_the_same_commands():
    standalone = _entry_points("livesnap.cli")
    plugin = _entry_points("openstack.livesnap.v1")
    assert len(standalone) >= 12
    assert {"livesnap_" + name: value
            for name, value in standalone.items()} == plugin
    assert _entry_points("openstack.cli.extension")["livesnap"] == \
        "livesnapclient.osc.plugin"


def openstack(*argv, env=None):
    """Run python-openstackclient; return (status, stdout, stderr)."""
    pytest.importorskip("openstackclient")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OS_", "LIVESNAP_"))}
    clean.update(env or {})
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "openstack")]
        + list(argv), env=clean, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_openstack_finds_livesnap_in_the_catalog(api):
    keystone(api, api.url)
    api.add("GET", "/v1/servers/srv1/snapshots?include_deleted=true",
            (200, {"snapshots": TREE[:6]}))
    rc, out, err = openstack(
        "livesnap", "snapshot", "list", "srv1", "--tree", "--ascii",
        env={"OS_AUTH_URL": api.url + "/v3", "OS_USERNAME": "demo",
             "OS_PASSWORD": "pw", "OS_PROJECT_NAME": "demo",
             "OS_USER_DOMAIN_NAME": "Default",
             "OS_PROJECT_DOMAIN_NAME": "Default"})
    assert rc == 0, err
    assert out.splitlines()[:3] == [
        "Disk vda:",
        "base [aaaaaaaa] available 10.0 GiB",
        "+- a [bbbbbbbb] available 512.0 KiB"]
    assert api.last()["headers"]["X-Auth-Token"] == KS_TOKEN


def test_openstack_exit_statuses_and_errors(api):
    fixed = ("--os-auth-type", "admin_token", "--os-endpoint", api.url,
             "--os-token", TOKEN)
    api.add("DELETE", "/v1/snapshots/snap-1",
            (202, {"operation": op(action="delete", mode="merge")}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="delete", mode="merge",
                                   status="failed", error="boom")}))
    rc, out, err = openstack(*fixed, "livesnap", "snapshot", "delete",
                             "snap-1", "--wait", "-f", "json")
    assert rc == 1
    assert json.loads(out)["status"] == "failed"
    assert "Error: operation op-1 failed: boom" in err
    assert api.last()["headers"]["X-Auth-Token"] == TOKEN

    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="delete", status="running")}))
    rc, out, err = openstack(*fixed, "livesnap", "snapshot", "delete",
                             "snap-1", "--wait", "--timeout", "0.2")
    assert rc == 2
    assert "timed out" in err

    api.add("POST", "/v1/snapshots/snap-1/revert",
            (409, {"error": {"code": "conflict",
                             "message": "server srv1 is running"}}))
    rc, out, err = openstack(*fixed, "livesnap", "snapshot", "revert",
                             "snap-1")
    assert rc == 1
    assert "Error (HTTP 409 conflict): server srv1 is running" in err


def test_the_client_imports_nothing_of_the_server():
    """python-livesnapclient installs without the service: importing every
    module of it loads neither livesnap's packages nor their libraries.
    """
    code = (
        "import json, sys\n"
        "import livesnapclient.shell, livesnapclient.osc.plugin\n"
        "import livesnapclient.v1.servers, livesnapclient.v1.hosts\n"
        "import livesnapclient.v1.snapshots, livesnapclient.v1.operations\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, cwd="/").stdout
    loaded = set(json.loads(out))
    server = {"agent", "conductor", "livesnap", "livesnap_tools", "tests",
              "oslo_messaging", "oslo_config", "sqlalchemy", "kombu",
              "webob", "keystonemiddleware"}
    assert loaded & server == set()
    assert "livesnapclient" in loaded and "keystoneauth1" in loaded


# ----------------------------------------------------- repeatable requests

def test_every_write_sends_a_fresh_idempotency_key(api, capsys):
    api.add("POST", "/v1/servers/srv1/snapshots",
            (202, {"snapshot": snap("snap-1", "s1", None, "creating"),
                   "operation": op()}))
    api.add("DELETE", "/v1/snapshots/snap-1",
            (202, {"operation": op(action="delete", mode="physical")}))
    api.add("GET", "/v1/snapshots/snap-1",
            (200, {"snapshot": snap("snap-1", "s1", None)}))
    for argv in (("snapshot", "create", "srv1", "--disk", "vda", "--name",
                  "s1"), ("snapshot", "create", "srv1", "--disk", "vda",
                          "--name", "s1"),
                 ("snapshot", "delete", "snap-1"),
                 ("snapshot", "show", "snap-1")):
        assert run(capsys, *argv)[0] == 0
    keys = [r["headers"].get("Idempotency-Key") for r in api.requests]
    assert all(len(k) == 36 for k in keys[:3]), keys
    assert len(set(keys[:3])) == 3
    assert keys[3] is None  # a GET has none


def test_lost_answer_is_retried_with_the_same_key(api, capsys,
                                                  monkeypatch):
    from livesnapclient import client
    monkeypatch.setattr(client, "RETRY_DELAY", 0.01)
    api.add("POST", "/v1/servers/srv1/snapshots",
            (502, b"bad gateway"), (503, {"error": {
                "code": "database_unavailable", "message": "later"}}),
            (202, {"snapshot": snap("snap-1", "s1", None, "creating"),
                   "operation": op()}))
    rc, out, _ = run(capsys, "snapshot", "create", "srv1", "--disk", "vda",
                     "--name", "s1")
    assert rc == 0
    assert "| operation  | op-1 (pending) " in out
    keys = {r["headers"]["Idempotency-Key"] for r in api.requests}
    assert len(api.requests) == 3 and len(keys) == 1


def test_dropped_connection_is_retried_with_the_same_key(capsys,
                                                         monkeypatch):
    """The API closes the connection without answering (its conductor
    died): the client sends the request again, with the same key.
    """
    from livesnapclient import client
    monkeypatch.setattr(client, "RETRY_DELAY", 0.01)
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_DELETE(self):
            seen.append(self.headers["Idempotency-Key"])
            if len(seen) < 3:
                return  # no answer: the connection just closes
            data = json.dumps({"operation": op(action="delete")}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        rc, out, err = run(capsys, "--url", "http://127.0.0.1:%d"
                           % server.server_address[1], "--token", TOKEN,
                           "snapshot", "delete", "snap-1")
    finally:
        server.shutdown()
        server.server_close()
    assert rc == 0, err
    assert len(seen) == 3 and len(set(seen)) == 1


def test_snapshot_show_and_list_give_taken_at(api, capsys):
    taken = dict(snap("snap-1", "s1", None),
                 taken_at="2024-01-01T00:00:00.250000Z")
    api.add("GET", "/v1/snapshots/snap-1", (200, {"snapshot": taken}))
    api.add("GET", "/v1/servers/srv1/snapshots",
            (200, {"snapshots": [taken]}))
    rc, out, _ = run(capsys, "snapshot", "show", "snap-1")
    assert rc == 0
    assert "| taken_at   | 2024-01-01T00:00:00.250000Z" in out
    rc, out, _ = run(capsys, "snapshot", "list", "srv1", "-c", "ID",
                     "-c", "Created", "-c", "Taken", "-f", "value")
    assert rc == 0
    assert out.split() == ["snap-1", "2024-01-01T00:00:00Z",
                           "2024-01-01T00:00:00.250000Z"]


def test_server_delete_waits_for_its_operation(api, capsys):
    api.add("DELETE", "/v1/servers/srv1",
            (202, {"operation": op(action="server.delete", mode=None),
                   "server": {"id": "srv1", "status": "deleting"}}))
    api.add("GET", "/v1/operations/op-1",
            (200, {"operation": op(action="server.delete", mode=None,
                                   status="succeeded", progress=100.0)}))
    rc, out, _ = run(capsys, "server", "delete", "srv1", "--wait")
    assert rc == 0
    req = api.requests[0]
    assert (req["method"], req["path"]) == ("DELETE", "/v1/servers/srv1")
    assert req["headers"]["Idempotency-Key"]
    assert "Deleting server srv1: operation op-1" in out
    assert "| status      | succeeded" in out


def test_server_delete_keep_snapshots_lists_files(api, capsys):
    api.add("DELETE", "/v1/servers/srv1?keep_snapshots=true",
            (200, {"server": {"id": "srv1", "status": "deleted",
                              "files_left": [{"path": "/img/a.qcow2"},
                                             {"path": "/img/b.qcow2"}]}}))
    rc, out, _ = run(capsys, "server", "delete", "srv1", "--keep-snapshots",
                     "-f", "json")
    assert rc == 0
    assert json.loads(out) == {"id": "srv1", "status": "deleted",
                               "files_left": "/img/a.qcow2\n/img/b.qcow2"}
