"""Failures after the stop roll back to a healthy old service; failures before it change nothing.

A health mismatch, a new start that fails, a stop that never completes, wrong
credentials: each on a real Orthanc, through the real CLI (or, for a custom
SysV script, the same wiring in-process).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.world import sha256, tree_digest

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def data():
    return make_dataset(6, per_series=3, rows=16, cols=16)


def _steps(to: Path, *, health: str = "{timeout: 60}", extra_after_upgrade: str = "") -> str:
    return ("  - preflight\n  - stop-service: {timeout: 60}\n  - snapshot\n"
            f"  - relocate: {{to: {json.dumps(str(to))}}}\n  - upgrade: {{timeout: 120, stall: 10}}\n"
            f"{extra_after_upgrade}  - start-service: {{timeout: 60}}\n  - health-check: {health}\n")


def test_a_health_mismatch_rolls_back_to_the_old_config_and_service(world_factory, data):
    w = world_factory().start()
    w.upload(data)
    counts, cfg = w.counts(), sha256(w.config)
    to = w.db.parent / "db-v7"
    # (A wrong `version` no longer gets this far: preflight refuses it, see below.)
    plan = w.plan(_steps(to, health="{timeout: 30, expect: {database_version: 99}}"))
    rc, report, err = w.cli("run", str(plan))
    assert rc == 3, (report, err)
    assert "expected 99" in report["error"]
    assert [s["status"] for s in report["steps"]][-3:] == ["undone", "undone", "failed"]
    assert w.counts() == counts and sha256(w.config) == cfg
    assert len(w.processes()) == 1
    assert not to.exists()  # moved aside with its upgraded index
    assert any(p.name.startswith("db-v7.rolled-back-") for p in to.parent.iterdir())
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 0 and status["run"]["outcome"] == "rolled-back"


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_version_the_binary_is_not_is_refused_before_anything_stops(world_factory, command):
    w = world_factory().start()
    cfg, pids = sha256(w.config), w.processes()
    to = w.db.parent / "db-v7"
    plan = w.plan(_steps(to, health="{timeout: 30, expect: {version: '9.9.9'}}"))
    rc, report, err = w.cli(command, str(plan))
    assert rc == 1, (report, err)
    assert "expects Orthanc 9.9.9" in report["error"] and "health-check.expect.version" in report["error"]
    assert report["outcome"] == "refused" and report["changes"] == []
    assert sha256(w.config) == cfg and w.processes() == pids and not to.exists()


def test_a_new_start_that_fails_rolls_back(world_factory, data, tmp_path):
    w = world_factory(folder_config=True).start()
    w.upload(data)
    counts = w.counts()
    before = tree_digest(w.config_dir)
    broken = tmp_path / "broken.json"
    broken.write_text('{ "StorageCompression": ')  # Orthanc refuses to start with it
    drop_in = w.config_dir / "zz-broken.json"
    extra = (f"  - command: {{argv: [/bin/cp, {json.dumps(str(broken))}, {json.dumps(str(drop_in))}], "
             f"undo: [/bin/rm, -f, --, {json.dumps(str(drop_in))}], "
             f"description: install a broken config drop-in}}\n")
    plan = w.plan(_steps(w.db.parent / "db-v7", extra_after_upgrade=extra))
    rc, report, err = w.cli("run", str(plan))
    assert rc == 3, (report, err)
    failed = next(s for s in report["steps"] if s["status"] == "failed")
    assert failed["id"] == "start-service"
    assert w.counts() == counts and tree_digest(w.config_dir) == before
    assert len(w.processes()) == 1


def test_wrong_credentials_refuse_in_preflight_and_change_nothing(world_factory, data):
    w = world_factory(auth=("admin", "right")).start()
    plan = w.plan(_steps(w.db.parent / "db-v7"),
                  service_extra="  credentials: {username: admin, password_env: ORCH_TEST_PW}\n")
    rc, report, err = w.cli("run", str(plan), env={"ORCH_TEST_PW": "Xq9-not-the-pw"})
    assert rc == 1, (report, err)
    assert "401" in report["error"] and "credentials" in report["hint"]
    assert "Xq9" not in json.dumps(report) + err  # the password never shows
    rc, report, err = w.cli("plan", str(plan), env={"ORCH_TEST_PW": "right"})
    assert rc == 0, (report, err)
    assert len(w.processes()) == 1


HANGING_SCRIPT = """#!/bin/sh
# A SysV script whose stop never completes (exec: no grandchild holds the pipes).
case "$1" in
  status) exit 0 ;;
  start) exit 0 ;;
  stop) exec sleep 600 ;;
esac
exit 3
"""


def test_a_stop_that_never_completes_fails_clearly_and_leaves_the_service_running(world_factory, data):
    from orchestrator.engine import Engine
    from orchestrator.journal import StepState
    from orchestrator.plan import load_plan
    from orchestrator.wiring import open_run

    w = world_factory().start()
    pid = w.processes()[0].pid
    script = w.root / "init.d" / "orthanc-hang"
    script.parent.mkdir()
    script.write_text(HANGING_SCRIPT)
    script.chmod(0o755)
    plan_path = w.plan(_steps(w.db.parent / "db-v7").replace("timeout: 60}", "timeout: 3}", 1),
                       manager="sysv")
    run = open_run(load_plan(plan_path), dry=False,
                   manager_options={"script": script, "policy_rc_d": None})
    report = Engine(run.steps, run.host, run.journal, run.ctx, mode="run").execute()
    assert int(report.exit_code) == 3, report.error
    assert "stop failed" in report.error and "did not finish in 3s" in report.error
    assert [p.pid for p in w.processes()] == [pid]  # left as it was
    assert run.ctx.records["stop-service"].state == StepState.UNDONE
    assert not (w.db.parent / "db-v7").exists()
    assert w.get("/system")["DatabaseVersion"] == 6
