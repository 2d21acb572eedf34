"""The same upgrade under a real systemd (sandbox) and a real SysV init script.

systemd: the CLI runs inside the sandbox's namespaces (`nsenter`), as it would
on a host whose init is systemd. SysV: a scoped copy of Debian's
/etc/init.d/orthanc, wired in-process (the plan has no key for a script path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.systemd import orthanc_unit
from tests.harness.world import REPO, World, sha256

pytestmark = pytest.mark.orthanc

STEPS = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {to}}}
  - upgrade: {{timeout: 120, stall: 10}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60{expect}}}
"""


@pytest.fixture(scope="module")
def data():
    return make_dataset(6, per_series=3, rows=16, cols=16)


@pytest.fixture
def systemd_world(systemd_sandbox, tmp_path):
    name = f"orch-up-{uuid.uuid4().hex[:8]}"
    w = World(tmp_path / "w")
    systemd_sandbox.install_unit(f"{name}.service", orthanc_unit(w.config))
    systemd_sandbox.systemctl("start", f"{name}.service", check=True)
    w.wait_up()
    yield w, name, systemd_sandbox
    systemd_sandbox.remove_unit(f"{name}.service")
    w.kill_all()


def _cli_in_sandbox(sandbox, *args: str) -> tuple[int, dict, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ORCHESTRATOR_TEST_CRASH_AT", None)
    done = subprocess.run(["nsenter", "-t", str(sandbox.pid), "-m", "-p", "--", sys.executable, "-m",
                           "orchestrator", *args, "--json"], capture_output=True, text=True,
                          timeout=300, env=env)
    return done.returncode, json.loads(done.stdout) if done.stdout.startswith("{") else {}, \
        done.stdout + done.stderr


@pytest.mark.systemd
def test_upgrade_under_systemd_then_a_rollback(systemd_world, data):
    w, name, sandbox = systemd_world
    w.upload(data)
    counts = w.counts()
    to = w.db.parent / "db-v7"
    plan = w.plan(STEPS.format(to=json.dumps(str(to)), expect=""), manager="systemd",
                  service_name=name)
    rc, report, out = _cli_in_sandbox(sandbox, "run", str(plan))
    assert rc == 0, out
    stop = next(s for s in report["steps"] if s["id"] == "stop-service")
    assert f"systemctl stop {name}.service" in " ".join(stop["changes"])
    assert w.counts() == counts and json.dumps(str(to)) in w.config.read_text()
    active = sandbox.systemctl("is-active", f"{name}.service").stdout.strip()
    assert active == "active"

    # A second run whose health check fails after the stop: rolled back, the unit active again.
    config = sha256(w.config)
    plan2 = w.plan(STEPS.format(to=json.dumps(str(w.db.parent / "db-v8")),
                                expect=", expect: {database_version: 99}"),
                   manager="systemd", service_name=name, name="plan2.yaml")
    rc, report, out = _cli_in_sandbox(sandbox, "run", str(plan2))
    assert rc == 3, out
    assert sha256(w.config) == config and w.counts() == counts
    assert sandbox.systemctl("is-active", f"{name}.service").stdout.strip() == "active"


def test_upgrade_under_a_sysv_init_script(tmp_path, data):
    from orchestrator.engine import Engine
    from orchestrator.plan import load_plan
    from orchestrator.wiring import open_run
    from tests.harness.sysv import STOCK_SCRIPT, write_test_script

    if not STOCK_SCRIPT.exists() or shutil.which("start-stop-daemon") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's /etc/init.d/orthanc, start-stop-daemon and root")
    w = World(tmp_path / "w")
    name = f"orch-sysv-{uuid.uuid4().hex[:6]}"
    script = write_test_script(tmp_path / "init.d", name=name, config=w.config,
                               pidfile=tmp_path / "run" / f"{name}.pid", logdir=tmp_path / "log")
    (tmp_path / "run").mkdir()
    try:
        subprocess.run([str(script), "start"], check=True, timeout=60, capture_output=True)
        w.wait_up()
        w.upload(data)
        counts = w.counts()
        to = w.db.parent / "db-v7"
        plan = w.plan(STEPS.format(to=json.dumps(str(to)), expect=""), manager="sysv",
                      service_name=name)
        run = open_run(load_plan(plan), dry=False,
                       manager_options={"script": script, "policy_rc_d": None})
        report = Engine(run.steps, run.host, run.journal, run.ctx, mode="run").execute()
        assert int(report.exit_code) == 0, report.error
        assert f"{script} stop" in " ".join(report.changes)
        assert w.counts() == counts and json.dumps(str(to)) in w.config.read_text()
        assert len(w.processes()) == 1
    finally:
        subprocess.run([str(script), "stop"], timeout=60, capture_output=True)
        w.kill_all()
