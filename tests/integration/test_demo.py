"""`make demo` end to end: with the process manager here, and under the sandbox's real systemd."""

import os
import subprocess
import sys

import pytest

from tests.harness.world import REPO

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]
DEMO = REPO / "demo" / "demo.py"


def _check(done: subprocess.CompletedProcess) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "result: done (exit 0)" in out
    assert "result: failed, and rolled back" in out and "[exit 3]" in out
    assert "demo done in" in out
    root = out.split("a throwaway Orthanc in ", 1)[1].split(",", 1)[0]
    assert not os.path.exists(root)  # the temp folder is gone
    return out


def test_demo_with_the_process_manager():
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=300)
    out = _check(done)
    if not os.path.isdir("/run/systemd/system"):
        assert "service manager: process, as the plan says" in out


@pytest.mark.systemd
def test_demo_under_systemd(systemd_sandbox):
    done = subprocess.run(["nsenter", "-t", str(systemd_sandbox.pid), "-m", "-p", "--", sys.executable,
                           str(DEMO)], capture_output=True, text=True, timeout=300)
    out = _check(done)
    assert "service manager: systemd, as the plan says" in out
    assert "systemctl stop orchestrator-demo-" in out
    units = systemd_sandbox.systemctl("list-units", "--all", "--no-legend", "orchestrator-demo*").stdout
    assert units.strip() == ""  # the runtime unit is gone
