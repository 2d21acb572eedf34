"""A whole blue/green move on two real Orthanc 1.10.1 servers, with a client storing throughout."""

from __future__ import annotations

import json
import sys
import time

import pytest
import requests

from tests.bluegreen.front import read_route


def _settle(stage, seconds: float = 1.0) -> None:
    """Let the client store a little more after the run, then stop it."""
    time.sleep(seconds)
    stage.client.stop()


def assert_all_on(stage, url: str) -> dict:
    """Every instance the old server had, and every one the client got a 200 for, is on the
    server at `url` with the same MD5 (all of them, not a sample)."""
    there = stage.ids_md5(url)
    assert stage.client.stored, "the client stored nothing"
    missing = {i for i in stage.client.stored if i not in there}
    assert not missing, f"{len(missing)} client instances missing on {url}"
    different = {i for i, md5 in stage.client.stored.items() if there[i] != md5}
    assert not different
    return there


def test_move_with_a_load_balancer_hook_loses_nothing(stage_factory):
    stage = stage_factory()
    before = stage.ids_md5(stage.old.url)
    code, report, err = stage.old.cli("run", str(stage.plan()))
    assert code == 0, (report, err)
    _settle(stage)
    there = assert_all_on(stage, stage.new.url)
    assert all(there.get(i) == md5 for i, md5 in before.items())
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["catch-up"]["facts"]["md5_checked"] >= len(before)  # outside the freeze
    assert steps["verify-copy"]["facts"]["comparison"]["ok"]
    freeze = steps["switch"]["facts"]["write_freeze_s"]
    assert freeze is not None and freeze > 0
    assert stage.client.refused > 0 or stage.client.longest_gap() >= 0
    print(f"write freeze: tool {freeze:.2f} s, client's longest gap "
          f"{stage.client.longest_gap():.2f} s")


def test_move_by_stopping_the_old_server_copies_the_rest_from_its_storage(stage_factory):
    stage = stage_factory()
    code, report, err = stage.old.cli("run", str(stage.plan(freeze="stop")))
    assert code == 0, (report, err)
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["freeze"]["facts"]["by"] == "storage"
    _settle(stage)
    assert_all_on(stage, stage.new.url)
    assert not stage.old.processes()  # the old server stays stopped: the way back is rollback


def test_a_dry_run_changes_nothing_and_counts_what_it_would_copy(stage_factory):
    stage = stage_factory()
    code, report, err = stage.old.cli("plan", str(stage.plan()))
    assert code == 0, (report, err)
    assert stage.ids_md5(stage.new.url) == {}
    assert read_route(stage.route) == {"port": stage.old.port, "frozen": False}
    assert stage.old.processes()
    steps = {s["id"]: s for s in report["steps"]}
    assert "would copy" in steps["replicate"]["detail"]
    assert not list(stage.old.state.rglob("replicate-*.json"))  # no resume state written


def _with_step_before_freeze(stage, step: str, name: str, **plan_kw):
    body = stage.plan(**plan_kw).read_text().split("steps:\n", 1)[1]
    return stage.old.plan(body.replace("  - freeze:", f"{step}\n  - freeze:"), name=name)


def _delete_on(url: str, iid: str) -> str:
    return json.dumps([sys.executable, "-c", "import requests, sys; "
                       "requests.delete(sys.argv[1]).raise_for_status()", f"{url}/instances/{iid}"])


@pytest.mark.parametrize("apply", [False, True])
def test_deletions_on_the_old_server_since_the_copy_began_are_reported_and_applied(
        stage_factory, apply):
    stage = stage_factory()
    victim = requests.get(f"{stage.old.url}/instances", timeout=10).json()[0]
    plan = _with_step_before_freeze(stage, f"  - command: {{argv: {_delete_on(stage.old.url, victim)}}}",
                                    "deleting.yaml")
    if apply:
        plan.write_text(plan.read_text().replace("  - verify-copy\n",
                                                 "  - verify-copy: {apply_deletions: true}\n"))
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 0, (report, err)
    verify = next(s for s in report["steps"] if s["id"] == "verify-copy")["facts"]
    assert verify["deleted_on_old"] == 1 and verify["deletions_applied"] == (1 if apply else 0)
    still = requests.get(f"{stage.new.url}/instances/{victim}", timeout=10).status_code
    assert still == (404 if apply else 200)
    _settle(stage)
    assert_all_on(stage, stage.new.url)

