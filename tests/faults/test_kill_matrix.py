"""The kill matrix: kill the tool anywhere in a `run`, then `status` and `rollback` bring the
old service back, whole, byte for byte (issue 12, "Rollback ends only on proof").

One real Orthanc 1.10.1 installation under the process manager, reset before each point
(the database folder and config put back from a pristine copy, the state folder emptied,
Orthanc started). Each point runs `orchestrator run` and kills it:

- at every step boundary (ORCHESTRATOR_TEST_CRASH_AT, journaled then SIGKILL), and
- at evenly spread moments of the run (a timed SIGKILL, so inside steps: mid-stop while
  the old Orthanc shuts down, mid-copy, mid-upgrade, mid-start). The run is timed once
  first (from `run-started` in the journal to its end, ~3 s here), and POINTS moments
  split it evenly: 26 by default (~0.12 s apart; with the boundaries and the SIGTERMs, 44
  points in about 3 minutes, for CI); ORCHESTRATOR_KILL_POINTS=60 gives the 0.05 s sweep;

then `status` must explain (or say there was no run), and `rollback` must end with exit 0,
the service answering with DatabaseVersion 6, the counts equal, the old index and the
config byte-identical, one Orthanc and no --upgrade left. SIGTERM at a few points must end
the same way through the tool's own rollback (exit 3). The figures (points tried, passed)
are printed at the end of the module (`-s` shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.harness.dicom import make_dataset
from tests.harness.world import UPGRADE_STEPS, REPO, World, sha256

pytestmark = pytest.mark.orthanc

STEPS = UPGRADE_STEPS
BOUNDARIES = [
    "preflight:after", "snapshot-stage:after", "relocate-stage:after",
    "stop-service:before", "stop-service:after", "snapshot:after",
    "relocate:before", "relocate:after", "upgrade:before", "upgrade:during", "upgrade:after",
    "start-service:before", "start-service:after", "health-check:after",
]
POINTS = int(os.environ.get("ORCHESTRATOR_KILL_POINTS", "26"))
SIGTERMS = [0.1, 0.3, 0.5, 0.7]  # fractions of the run
FIGURES = {"tried": 0, "passed": 0, "completed": 0, "started": time.monotonic()}


class Site:
    """One installation, reset to its pristine state before every point."""

    def __init__(self, root: Path):
        self.world = World(root / "w")
        w = self.world
        w.start()
        w.upload(make_dataset(6, per_series=3, rows=16, cols=16))
        self.counts = w.counts()
        w.stop()
        self.pristine = root / "pristine"
        shutil.copytree(w.root / "lib", self.pristine, symlinks=True)
        self.index = sha256(w.db / "index")
        self.config = w.config.read_bytes()
        self.to = w.db.parent / "db-v7"
        self.plan = w.plan(STEPS.format(to=json.dumps(str(self.to))),
                           service_extra="  stop_grace: 5\n")
        self.duration = self._time_a_run()

    def _time_a_run(self) -> float:
        """Seconds from `run-started` to the end of a whole, undisturbed run."""
        self.reset()
        proc = self.spawn_run()
        assert self.journal_started(proc)
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - t0
        assert proc.returncode == 0, (out, err)
        return took

    def reset(self) -> None:
        w = self.world
        w.kill_all()
        shutil.rmtree(w.root / "lib")
        shutil.copytree(self.pristine, w.root / "lib", symlinks=True)
        w.config.write_bytes(self.config)
        shutil.rmtree(w.state, ignore_errors=True)
        w.start()

    def spawn_run(self, env: dict | None = None) -> subprocess.Popen:
        full = dict(os.environ, **(env or {}))
        full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
        return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(self.plan),
                                 "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=full, cwd=self.world.root)

    def journal_started(self, proc: subprocess.Popen, timeout: float = 30) -> bool:
        """Wait until the run has journaled `run-started` (False: it ended first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            for journal in self.world.state.glob("*.journal"):
                try:
                    if b"run-started" in journal.read_bytes():
                        return True
                except OSError:
                    pass
            time.sleep(0.005)
        return False

    def check_restored(self, point: str) -> None:
        """After the rollback: the old service answers, whole, byte for byte."""
        w = self.world
        assert w.get("/system")["DatabaseVersion"] == 6, point
        assert w.counts() == self.counts, point
        assert sha256(w.db / "index") == self.index, point
        assert w.config.read_bytes() == self.config, point
        assert len(w.processes()) == 1 and w.upgrade_processes() == [], point
        time.sleep(0.5)  # a stop still in progress would show now: the service must stay up
        assert len(w.processes()) == 1 and w.get("/system")["DatabaseVersion"] == 6, point


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    FIGURES["started"] = time.monotonic()
    s = Site(tmp_path_factory.mktemp("kill-matrix"))
    yield s
    s.world.kill_all()
    took = time.monotonic() - FIGURES["started"]
    print(f"\nkill matrix: {FIGURES['passed']} of {FIGURES['tried']} points passed "
          f"({FIGURES['completed']} of them finished before the kill) in {took:.0f} s; "
          f"a whole run took {s.duration:.2f} s")


def _status_then_rollback(site: Site, point: str) -> None:
    w = site.world
    rc, status, err = w.cli("status", str(site.plan))
    assert rc in (0, 5), (point, status, err)
    if rc == 5:
        assert status["run"]["open"], (point, status)
    rc, report, err = w.cli("rollback", str(site.plan))
    assert rc == 0, (point, report, err)
    site.check_restored(point)
    assert _journal_closed(site), point


def _journal_closed(site: Site) -> bool:
    """The journal's last record closes the run (what `status` reads, without a CLI start)."""
    journals = list(site.world.state.glob("*.journal"))
    if not journals:
        return True
    lines = [ln for ln in journals[0].read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1])["event"] == "run-finished"


@pytest.mark.parametrize("point", BOUNDARIES)
def test_kill_at_a_step_boundary_then_rollback(site, point):
    FIGURES["tried"] += 1
    site.reset()
    proc = site.spawn_run({"ORCHESTRATOR_TEST_CRASH_AT": point})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -9, (point, out, err)
    _status_then_rollback(site, point)
    FIGURES["passed"] += 1


@pytest.mark.parametrize("i", range(POINTS))
def test_kill_inside_a_step_then_rollback(site, i):
    FIGURES["tried"] += 1
    site.reset()
    proc = site.spawn_run()
    started = site.journal_started(proc)
    after = site.duration * (i + 0.5) / POINTS
    time.sleep(after)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    point = f"SIGKILL {after:.2f}s after run-started (journaled: {started})"
    assert proc.returncode in (-9, 0), (point, out, err)
    if proc.returncode == 0 or _journal_says_done(site):
        # Faster than the timed run: it finished (perhaps killed while printing its report).
        _completed(site, point)
        return
    _status_then_rollback(site, point)
    FIGURES["passed"] += 1


def _journal_says_done(site: Site) -> bool:
    journals = list(site.world.state.glob("*.journal"))
    lines = [ln for ln in journals[0].read_text().splitlines() if ln.strip()] if journals else []
    last = json.loads(lines[-1]) if lines else {}
    return last.get("event") == "run-finished" and last.get("outcome") == "done"


def _completed(site: Site, point: str) -> None:
    w = site.world
    rc, status, _ = w.cli("status", str(site.plan))
    assert rc == 0 and status["run"]["outcome"] == "done", (point, status)
    assert w.counts() == site.counts and len(w.processes()) == 1, point
    FIGURES["passed"] += 1
    FIGURES["completed"] += 1


@pytest.mark.parametrize("fraction", SIGTERMS)
def test_sigterm_rolls_back_by_itself(site, fraction):
    FIGURES["tried"] += 1
    site.reset()
    proc = site.spawn_run()
    site.journal_started(proc)
    after = site.duration * fraction
    time.sleep(after)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    point = f"SIGTERM {after:.2f}s after run-started"
    report = json.loads(out) if out.strip().startswith("{") else {}
    # Rolled back (3), refused before any change (1 or 130), or it had just finished (0).
    assert proc.returncode in (0, 1, 3, 130), (point, out, err)
    assert proc.returncode != 4, (point, report)
    if proc.returncode == 0:
        _completed(site, point)
        return
    assert _journal_closed(site), point
    site.check_restored(point)
    FIGURES["passed"] += 1


def test_a_kill_mid_stop_is_finished_by_the_rollback(site):
    """The issue's case: killed while the old Orthanc is still shutting down (a keep-alive
    client holds it), `rollback` must not take "still running" for healthy."""
    FIGURES["tried"] += 1
    site.reset()
    w = site.world
    old_pid = w.processes()[0].pid
    keep = requests.Session()
    keep.get(f"{w.url}/system", timeout=10).raise_for_status()  # a keep-alive connection
    try:
        proc = site.spawn_run()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            lines = [ln for j in w.state.glob("*.journal") for ln in j.read_text().splitlines()]
            if any('"event": "step-started"' in ln and '"step": "stop-service"' in ln
                   for ln in lines):
                break
            time.sleep(0.005)
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        alive = [p.pid for p in w.processes()]
        rc, status, err = w.cli("status", str(site.plan))
        assert rc == 5, (status, err)
        rc, report, err = w.cli("rollback", str(site.plan))
        assert rc == 0, (report, err)
    finally:
        keep.close()  # the old process, had it been left shutting down, would now exit
    site.check_restored("SIGKILL mid-stop")
    assert w.processes()[0].pid != old_pid or old_pid not in alive
    FIGURES["passed"] += 1
