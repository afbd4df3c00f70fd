"""CLI: ``snapshot group create|list|show|delete|revert``."""

from tests.unit.test_cli import api  # noqa: F401  (fixture)
from tests.unit.test_cli import op
from tests.unit.test_cli import run
from tests.unit.test_cli import snap

GROUP = {"id": "g1", "name": "db", "server_id": "srv1", "project_id": "p1",
         "operation_id": "op-1", "created_at": "2024-01-01T00:00:00Z",
         "snapshots": [snap("s1", "db", None, disk="vda"),
                       snap("s2", "db", None, disk="vdb")]}


def test_group_create_posts_disks(api, capsys):  # noqa: F811
    api.add("POST", "/v1/servers/srv1/snapshot-groups",
            (202, {"snapshot_group": GROUP,
                   "operation": op(action="create_group")}))
    rc, out, _ = run(capsys, "snapshot", "group", "create", "srv1",
                     "--name", "db", "--disk", "vda", "--disk", "vdb")
    assert rc == 0
    assert api.last()["body"] == {"snapshot_group": {
        "name": "db", "disks": ["vda", "vdb"]}}
    assert "vdb:s2" in out


def test_group_create_all_disks_sends_no_list(api, capsys):  # noqa: F811
    api.add("POST", "/v1/servers/srv1/snapshot-groups",
            (202, {"snapshot_group": GROUP,
                   "operation": op(action="create_group")}))
    rc, _, _ = run(capsys, "snapshot", "group", "create", "srv1",
                   "--name", "db")
    assert rc == 0
    assert api.last()["body"] == {"snapshot_group": {"name": "db"}}


def test_group_create_quiesce(api, capsys):  # noqa: F811
    api.add("POST", "/v1/servers/srv1/snapshot-groups",
            (202, {"snapshot_group": GROUP,
                   "operation": op(action="create_group")}))
    rc, _, _ = run(capsys, "snapshot", "group", "create", "srv1",
                   "--name", "db", "--quiesce", "required")
    assert rc == 0
    assert api.last()["body"] == {"snapshot_group": {
        "name": "db", "quiesce": "required"}}


def test_group_list_show_delete_revert(api, capsys):  # noqa: F811
    api.add("GET", "/v1/servers/srv1/snapshot-groups",
            (200, {"snapshot_groups": [GROUP]}))
    api.add("GET", "/v1/snapshot-groups/g1", (200, {"snapshot_group": GROUP}))
    ops = {"operations": [op("op-2", action="delete"),
                          op("op-3", action="delete")]}
    api.add("DELETE", "/v1/snapshot-groups/g1", (202, ops))
    api.add("POST", "/v1/snapshot-groups/g1/revert", (202, ops))
    rc, out, _ = run(capsys, "snapshot", "group", "list", "srv1")
    assert rc == 0 and "g1" in out
    rc, out, _ = run(capsys, "snapshot", "group", "show", "g1")
    assert rc == 0 and "vda:s1" in out
    rc, out, _ = run(capsys, "snapshot", "group", "delete", "g1")
    assert rc == 0 and "op-2" in out and "op-3" in out
    rc, out, _ = run(capsys, "snapshot", "group", "revert", "g1")
    assert rc == 0 and api.last()["path"] == "/v1/snapshot-groups/g1/revert"
