"""``livesnap policy ...`` and ``livesnap snapshot protect/unprotect``
against the stub REST API of test_cli (ported from the argparse CLI of
issue 12 onto the cliff commands of livesnapclient)."""

import json

from tests.unit import test_cli
from tests.unit.test_cli import run
from tests.unit.test_cli import snap

#: test_cli's fixture, bound by assignment: the tests' argument of the same
#: name then does not redefine an import (flake8 F811).
api = test_cli.api

POLICY = {
    "id": "pol-1", "name": "nightly", "project_id": "p1",
    "server_id": "srv1", "disks": None, "interval": None,
    "cron": "0 2 * * *", "timezone": "Europe/Paris",
    "retention": {"keep_last": 0, "keep_hourly": 0, "keep_daily": 7,
                  "keep_weekly": 4, "keep_monthly": 0, "keep_yearly": 0},
    "enabled": True, "last_run": None, "last_outcome": None,
    "next_run": "2026-11-26T01:00:00Z",
}
RUN = {"id": "run-1", "policy_id": "pol-1", "disk": "vda",
       "scheduled_for": "2026-11-25T01:00:00Z", "outcome": "skipped",
       "reason_code": "host_down", "reason": "The agent is not reporting.",
       "attempts": 3, "snapshot_id": None, "operation_id": None,
       "prune_status": "none", "pruned_ids": []}


def test_policy_create_posts_body(api, capsys):
    api.add("POST", "/v1/policies", (201, {"policy": POLICY}))
    rc, out, err = run(capsys, "policy", "create", "srv1", "--name",
                       "nightly", "--cron", "0 2 * * *", "--timezone",
                       "Europe/Paris", "--keep-daily", "7",
                       "--keep-weekly", "4")
    assert rc == 0, err
    assert api.last()["body"] == {"policy": {
        "name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris",
        "server_id": "srv1",
        "retention": {"keep_daily": 7, "keep_weekly": 4}}}
    assert "keep_daily=7, keep_weekly=4" in out
    assert "2026-11-26T01:00:00Z" in out


def test_policy_create_needs_a_schedule(api, capsys):
    try:
        run(capsys, "policy", "create", "srv1", "--name", "x")
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("no usage error")
    assert api.requests == []


def test_policy_create_interval_and_disks_json(api, capsys):
    api.add("POST", "/v1/policies", (201, {"policy": POLICY}))
    rc, out, err = run(capsys, "policy", "create", "srv1", "--name", "n",
                       "--interval", "3600", "--disk", "vda", "--disk",
                       "vdb", "--keep-last", "3", "-f", "json")
    assert rc == 0, err
    assert api.last()["body"]["policy"] == {
        "name": "n", "interval": 3600, "disks": ["vda", "vdb"],
        "server_id": "srv1", "retention": {"keep_last": 3}}
    assert json.loads(out) == POLICY


def test_policy_list_show_update_delete(api, capsys):
    api.add("GET", "/v1/policies?server_id=srv1",
            (200, {"policies": [POLICY]}))
    rc, out, err = run(capsys, "policy", "list", "--server", "srv1")
    assert rc == 0, err
    assert "0 2 * * * (Europe/Paris)" in out and "pol-1" in out
    assert "keep_daily=7, keep_weekly=4" in out
    rc, out, err = run(capsys, "policy", "list", "--server", "srv1", "-f",
                       "json", "-c", "ID", "-c", "Retention")
    assert json.loads(out) == [{"ID": "pol-1",
                                "Retention": POLICY["retention"]}]
    api.add("GET", "/v1/policies/pol-1", (200, {"policy": POLICY}))
    rc, out, err = run(capsys, "policy", "show", "pol-1", "-f", "json")
    assert rc == 0 and json.loads(out) == POLICY
    api.add("PATCH", "/v1/policies/pol-1",
            (200, {"policy": dict(POLICY, enabled=False, next_run=None)}))
    rc, out, err = run(capsys, "policy", "update", "pol-1", "--disable")
    assert rc == 0, err
    assert api.last()["body"] == {"policy": {"enabled": False}}
    rc, out, err = run(capsys, "policy", "update", "pol-1")
    assert rc == 1 and "nothing to change" in err
    api.add("DELETE", "/v1/policies/pol-1", (200, {"policy": POLICY}))
    rc, out, err = run(capsys, "policy", "delete", "pol-1")
    assert rc == 0 and "snapshots stay" in out


def test_policy_runs(api, capsys):
    api.add("GET", "/v1/policies/pol-1/runs", (200, {"runs": [RUN]}))
    rc, out, err = run(capsys, "policy", "runs", "pol-1")
    assert rc == 0, err
    assert "skipped" in out and "host_down: The agent" in out
    rc, out, err = run(capsys, "policy", "runs", "pol-1", "-f", "json")
    assert json.loads(out) == [{
        "Slot": "2026-11-25T01:00:00Z", "Disk": "vda", "Outcome": "skipped",
        "Attempts": 3, "Snapshot": None, "Pruned": [],
        "Reason": "host_down: The agent is not reporting."}]


def test_snapshot_protect_and_unprotect(api, capsys):
    pinned = dict(snap("snap-1", "a", None), protected=True, policy_id=None)
    api.add("PATCH", "/v1/snapshots/snap-1", (200, {"snapshot": pinned}))
    rc, out, err = run(capsys, "snapshot", "protect", "snap-1")
    assert rc == 0, err
    assert api.last()["body"] == {"snapshot": {"protected": True}}
    assert "| protected  | yes" in out
    rc, out, err = run(capsys, "snapshot", "unprotect", "snap-1", "-f",
                       "json")
    assert api.last()["body"] == {"snapshot": {"protected": False}}
    assert json.loads(out) == pinned


def test_delete_protected_snapshot_error(api, capsys):
    api.add("DELETE", "/v1/snapshots/snap-1", (409, {"error": {
        "code": "snapshot_protected", "message": "Snapshot snap-1 is "
        "protected; unprotect it first."}}))
    rc, out, err = run(capsys, "snapshot", "delete", "snap-1")
    assert rc == 1
    assert "409 snapshot_protected" in err
