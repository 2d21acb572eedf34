"""Streaming output against a real Orthanc: a redirected `run` writes its steps while they
happen, timestamped, and a narrow stdout encoding (cp1252) never fails the report."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.world import REPO

pytestmark = pytest.mark.orthanc

STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def _wait_for(path, text, proc, timeout=120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text(encoding="cp1252", errors="replace") if path.exists() else ""
        if text in got:
            return got
        assert proc.poll() is None, f"the run ended before {text!r} was written: {got}"
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never written: {got}")


@pytest.mark.parametrize("flag", ["", "--verbose"])
def test_a_redirected_run_streams_its_steps_live_and_survives_cp1252(world_factory, flag):
    w = world_factory().start()
    w.upload(make_dataset(3, per_series=3, rows=16, cols=16))
    gate = w.root / "go"
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n"
                  "  - command: {argv: [/bin/sh, -c, 'while [ ! -e go ]; do sleep 0.05; done'],"
                  " timeout: 120}\n  - start-service\n  - health-check: {timeout: 60}\n")
    out, err = w.root / "out.txt", w.root / "err.txt"
    env = dict(os.environ, PYTHONIOENCODING="cp1252",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "orchestrator", "run", str(plan)] + ([flag] if flag else [])
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(argv, stdout=o, stderr=e, env=env, cwd=w.root)
        try:
            live = _wait_for(err, "-> command", proc)
            # While the run waits inside its command step, the log already shows the steps.
            assert "done preflight" in live and "done stop-service" in live
            assert all(STAMPED.match(line) for line in live.splitlines() if line), live
            if flag == "--verbose":
                assert "     - stop the process service" in live, live
            gate.touch()
            rc = proc.wait(timeout=300)
        finally:
            gate.touch()
            if proc.poll() is None:
                proc.kill()
    report = out.read_bytes()
    assert rc == 0, (report, err.read_text(errors="replace"))
    assert "█".encode() not in report and b"|#" in report  # the bars in ASCII
    assert "done health-check" in err.read_text(encoding="cp1252")


def test_quiet_writes_nothing_live(world_factory):
    w = world_factory().start()
    plan = w.plan("  - preflight\n")
    rc, out, err = w.cli("--quiet", "run", str(plan), json_out=False)
    assert rc == 0, (out, err)
    assert err == "" and "result: done" in out
