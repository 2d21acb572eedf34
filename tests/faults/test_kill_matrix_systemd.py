"""A sample of the kill matrix under a real systemd (tests/harness/systemd.py's sandbox).

The tool runs inside the sandbox's namespaces (nsenter) with `manager: systemd`. It is
killed at a few step boundaries (ORCHESTRATOR_TEST_CRASH_AT), right after it asked systemd
to stop the unit (mid-stop, SIGKILL by PID from outside), and once with SIGTERM; then
`status` and `rollback` must leave the unit active, answering with DatabaseVersion 6, the
counts equal and the config byte-identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tests.harness.dicom import make_dataset
from tests.harness.systemd import orthanc_unit
from tests.harness.world import UPGRADE_STEPS, REPO, World, sha256
from tests.integration.conftest import systemd_sandbox  # noqa: F401 - the shared fixture

pytestmark = [pytest.mark.orthanc, pytest.mark.systemd]

STEPS = UPGRADE_STEPS


@pytest.fixture
def unit_world(systemd_sandbox, tmp_path):  # noqa: F811 - the imported fixture
    name = f"orch-km-{uuid.uuid4().hex[:8]}"
    w = World(tmp_path / "w")
    systemd_sandbox.install_unit(f"{name}.service", orthanc_unit(w.config))
    systemd_sandbox.systemctl("start", f"{name}.service", check=True)
    w.wait_up()
    w.upload(make_dataset(6, per_series=3, rows=16, cols=16))
    plan = w.plan(STEPS.format(to=json.dumps(str(w.db.parent / "db-v7"))), manager="systemd",
                  service_name=name)
    yield w, name, systemd_sandbox, plan
    systemd_sandbox.remove_unit(f"{name}.service")
    w.kill_all()


def _spawn(sandbox, *args: str, env: dict | None = None) -> subprocess.Popen:
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen(["nsenter", "-t", str(sandbox.pid), "-m", "-p", "--", sys.executable,
                             "-m", "orchestrator", *args, "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def _cli(sandbox, *args: str) -> tuple[int, dict, str]:
    proc = _spawn(sandbox, *args)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, json.loads(out) if out.startswith("{") else {}, out + err


def _tool(proc: subprocess.Popen) -> psutil.Process:
    """The Python process nsenter forked (entering a PID namespace forks)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children()
        if kids:
            return kids[0]
        time.sleep(0.01)
    raise AssertionError("nsenter started no child")


def _restored(w: World, name: str, sandbox, counts: dict, config: str, point: str) -> None:
    rc, status, out = _cli(sandbox, "status", str(w.root / "plan.yaml"))
    assert rc in (0, 5), (point, out)
    rc, report, out = _cli(sandbox, "rollback", str(w.root / "plan.yaml"))
    assert rc == 0, (point, out)
    time.sleep(0.5)
    assert sandbox.systemctl("is-active", f"{name}.service").stdout.strip() == "active", point
    assert w.get("/system")["DatabaseVersion"] == 6 and w.counts() == counts, point
    assert sha256(w.config) == config, point


@pytest.mark.parametrize("point", ["stop-service:after", "upgrade:during",
                                   "start-service:after"])
def test_kill_at_a_boundary_under_systemd(unit_world, point):
    w, name, sandbox, plan = unit_world
    counts, config = w.counts(), sha256(w.config)
    proc = _spawn(sandbox, "run", str(plan), env={"ORCHESTRATOR_TEST_CRASH_AT": point})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, (point, out, err)
    _restored(w, name, sandbox, counts, config, point)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_signal_mid_stop_under_systemd(unit_world, sig):
    w, name, sandbox, plan = unit_world
    counts, config = w.counts(), sha256(w.config)
    proc = _spawn(sandbox, "run", str(plan))
    tool = _tool(proc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        lines = [ln for j in w.state.glob("*.journal") for ln in j.read_text().splitlines()]
        if any('"event": "step-started"' in ln and '"step": "stop-service"' in ln for ln in lines):
            break
        time.sleep(0.005)
    time.sleep(0.1)
    tool.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    point = f"{signal.Signals(sig).name} mid-stop"
    if sig == signal.SIGTERM:
        assert proc.returncode in (1, 3, 130), (point, out, err)  # it rolled back by itself
    _restored(w, name, sandbox, counts, config, point)
