"""`inspect` shows which service manager runs the service, why, and its state (observing only)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.orthanc


def _inspect(*args):
    done = subprocess.run([sys.executable, "-m", "orchestrator", "inspect", *args, "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["service"]


def test_inspect_detects_the_process_manager_and_sees_the_running_orthanc(orthanc_factory):
    server = orthanc_factory()
    view = _inspect(str(server.config_path), "--service", "orch-no-such-service")
    assert view["manager"] == "process"
    assert "/etc/init.d/orch-no-such-service" in view["detected"]
    assert view["state"] == "running" and view["main_pid"] == server.proc.pid
    server.stop()
    view = _inspect(str(server.config_path), "--service", "orch-no-such-service")
    assert view["state"] == "stopped" and view["main_pid"] is None
