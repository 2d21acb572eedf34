"""The shipped systemd units: `systemd-analyze verify` clean, and one real run in the sandbox.

The real run starts `orthanc-upgrade@NAME.service` inside the systemd sandbox with
the shipped unit file as is, plus a drop-in (the documented way to adapt it) that
points it at the test's plan, its temp folder and this checkout's Python. The
plan upgrades a real Orthanc unit of the same systemd.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.harness.systemd import orthanc_unit
from tests.harness.world import REPO, World

UNIT = REPO / "systemd" / "orthanc-upgrade@.service"
pytestmark = pytest.mark.orthanc


def test_unit_verifies_clean(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this checkout's tool.
    text = UNIT.read_text().replace("/usr/local/bin/orchestrator", sys.executable + " -m orchestrator")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "orthanc-upgrade@x.service")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    mine = [line for line in (done.stdout + done.stderr).splitlines() if "orthanc-upgrade@" in line]
    assert done.returncode == 0 and mine == [], done.stdout + done.stderr


def test_unit_never_orders_itself_before_orthanc():
    # Before=orthanc.service would make the tool's own `systemctl start orthanc` wait on this unit.
    lines = [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith("Before=")]
    assert not any("orthanc.service" in line for line in lines)


@pytest.mark.systemd
def test_template_runs_a_plan_in_the_sandbox(systemd_sandbox, tmp_path):
    name = f"orch-unit-{uuid.uuid4().hex[:8]}"
    w = World(tmp_path / "w")
    systemd_sandbox.install_unit(f"{name}.service", orthanc_unit(w.config))
    try:
        systemd_sandbox.systemctl("start", f"{name}.service", check=True)
        w.wait_up()
        to = w.db.parent / "db-v7"
        plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n  - snapshot\n"
                      f"  - relocate: {{to: {json.dumps(str(to))}}}\n"
                      "  - upgrade: {timeout: 120, stall: 30}\n  - start-service: {timeout: 60}\n"
                      "  - health-check: {timeout: 60}\n", manager="systemd", service_name=name)
        instance = f"orthanc-upgrade@{name}.service"
        systemd_sandbox.install_unit("orthanc-upgrade@.service", UNIT.read_text())
        dropin = (f"[Unit]\nConditionPathExists=\nDefaultDependencies=no\n\n[Service]\n"
                  f"ExecStart=\nExecStart={sys.executable} -m orchestrator run {plan}\n"
                  f"Environment=PYTHONPATH={REPO}\nPrivateTmp=no\nReadWritePaths={tmp_path}\n")
        d = f"/run/systemd/system/{instance}.d"
        systemd_sandbox.runner.run(["mkdir", "-p", d], timeout=30)
        (tmp_path / "override.conf").write_text(dropin)
        systemd_sandbox.runner.run(["cp", str(tmp_path / "override.conf"), f"{d}/override.conf"], timeout=30)
        systemd_sandbox.systemctl("daemon-reload", check=True)
        # Issue 12: the journal shows the run live. Started without waiting, the unit is still
        # "activating" (the oneshot runs) when its first step lines are already in the journal.
        done = systemd_sandbox.systemctl("start", "--no-block", instance, timeout=60)
        seen_live = False
        for _ in range(3000):  # bounded: at most ~5 min of 0.1 s polls
            state = systemd_sandbox.systemctl("is-active", instance).stdout.strip()
            if state != "activating" and seen_live or state in ("failed", "inactive") and _ > 50:
                break
            if state == "activating" and not seen_live:
                so_far = systemd_sandbox.runner.run(["journalctl", "-u", instance, "--no-pager"],
                                                    timeout=30, check=False).stdout
                seen_live = "-> preflight" in so_far
            time.sleep(0.1)
        show = systemd_sandbox.systemctl("show", instance, "-p", "Result,ExecMainStatus").stdout
        journal = systemd_sandbox.runner.run(["journalctl", "-u", instance, "--no-pager", "-n", "60"],
                                            timeout=30, check=False).stdout
        assert done.returncode == 0, show + journal
        assert seen_live, "no step line reached the journal while the run was in progress\n" + journal
        assert "Result=success" in show and "ExecMainStatus=0" in show, show + journal
        assert "result: done (exit 0)" in journal  # the tool's report went to the journal
        assert json.dumps(str(to)) in w.config.read_text()
        assert systemd_sandbox.systemctl("is-active", f"{name}.service").stdout.strip() == "active"
        w.wait_up()
    finally:
        systemd_sandbox.runner.run(["rm", "-rf", f"/run/systemd/system/orthanc-upgrade@{name}.service.d"],
                                   timeout=30, check=False)
        systemd_sandbox.remove_unit(f"{name}.service")
        w.kill_all()
