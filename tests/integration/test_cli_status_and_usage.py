"""The CLI in a real process: usage errors under --json, and `status` with and without a plan."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator.journal import Event, Journal
from tests.harness.world import REPO


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, timeout=60, env=full)


@pytest.mark.parametrize("args,where", [
    (["run", "--json"], "orchestrator run"),
    (["plan", "--json", "--no-such-option", "x"], "orchestrator plan"),
    (["status", "a.yaml", "b.yaml", "--json"], "orchestrator status"),
    (["no-such-command", "--json"], "orchestrator"),
])
def test_usage_errors_under_json_print_the_error_document(args, where):
    done = cli(*args)
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["error"]
    assert doc["hint"] == f"see `{where} --help`"
    assert "Usage:" in done.stderr  # the human message still goes to stderr


def test_usage_errors_without_json_print_nothing_on_stdout():
    done = cli("run")
    assert done.returncode == 2 and done.stdout == "" and "Missing argument" in done.stderr


def _plan(tmp_path, state):
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"version: 1\nstate_dir: {json.dumps(str(state))}\n"
                    "service: {name: orch-status, binary: /usr/sbin/Orthanc, config: /nonexistent}\n"
                    "steps:\n  - stop-service\n  - start-service\n")
    return plan


def test_status_with_a_plan_reads_the_plans_state_dir(tmp_path):
    state = tmp_path / "plan-state"
    plan = _plan(tmp_path, state)
    Journal.for_service(state, "orch-status").append(
        Event.RUN_STARTED, run_id="r1", mode="run", plan=str(plan), service="orch-status", pid=1,
        host="h", steps=[])
    elsewhere = {"ORCHESTRATOR_STATE_DIR": str(tmp_path / "default-state")}
    for args in (["status", str(plan)], ["status", "--plan", str(plan)]):
        done = cli(*args, "--json", env=elsewhere)
        assert done.returncode == 5, done.stderr
        doc = json.loads(done.stdout)
        assert doc["run"]["run_id"] == "r1" and doc["journal"] == str(state / "orch-status.journal")
    bare = cli("status", env=elsewhere)
    assert bare.returncode == 0
    assert bare.stdout.startswith(f"no run recorded in {tmp_path / 'default-state'}")
    assert "orchestrator status PLAN" in bare.stdout
    assert cli("status", str(plan), "--plan", str(tmp_path / "other.yaml")).returncode == 2
