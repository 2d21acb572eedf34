"""The password's environment variable reaches no child: not the Orthanc the run starts, not
its `--upgrade` (real Orthanc under the process manager, read from /proc/<pid>/environ)."""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.orthanc,
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")]

PASSWORD = "Zq9-env-secret/#?@"
VAR = "ORCH_TEST_CHILD_PW"


def _environ(proc) -> dict:
    raw = open(f"/proc/{proc.pid}/environ", "rb").read()
    return dict(kv.split(b"=", 1) for kv in raw.split(b"\0") if b"=" in kv)


def test_the_started_orthanc_never_sees_the_password_variable(world_factory):
    w = world_factory(auth=("admin", PASSWORD)).start()
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n"
                  "  - start-service: {timeout: 60}\n  - health-check: {timeout: 60}\n",
                  service_extra=f"  credentials: {{username: admin, password_env: {VAR}}}\n")
    rc, report, err = w.cli("run", str(plan), env={VAR: PASSWORD})
    assert rc == 0, (report, err)
    procs = w.processes()
    assert procs, "the run left no Orthanc running"
    for proc in procs:
        env = _environ(proc)
        assert VAR.encode() not in env and PASSWORD.encode() not in b"\0".join(env.values())
