"""End to end against real Orthanc 1.10.1 under the process manager, through the CLI.

The happy path with relocation and snapshot, the deadlock refusal, the real
deadlock caught by the watchdog and rolled back, the dry run's honesty, and the
lock between two runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.world import REPO, sha256, tree_digest

pytestmark = pytest.mark.orthanc

FULL = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {to}}}
  - upgrade: {{timeout: 120, stall: 10}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60}}
"""


@pytest.fixture(scope="module")
def data():
    return make_dataset(12, per_series=3, rows=16, cols=16)


def test_happy_path_relocates_upgrades_and_leaves_the_old_folder_untouched(world_factory, data):
    w = world_factory().start()
    w.upload(data)
    before_counts = w.counts()
    to = w.db.parent / "-db v7 'new'; rm -rf x"  # hostile: it must stay one argv element
    plan = w.plan(FULL.format(to=json.dumps(str(to))))
    rc, report, err = w.cli("run", str(plan))
    assert rc == 0, (report, err)
    assert report["outcome"] == "done" and report["downtime"] > 0
    assert [s["status"] for s in report["steps"]] == ["done"] * 9
    assert w.counts() == before_counts
    assert w.get("/system")["DatabaseVersion"] == 6
    config = (w.config_dir / "orthanc.json").read_text()
    assert json.dumps(str(to)) in config and "// written by the test world" in config
    assert (to / "index").exists() and len(w.processes()) == 1
    assert any("index copied" in s["detail"] for s in report["steps"] if s["id"] == "snapshot")
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 0 and status["run"]["outcome"] == "done" and not status["run"]["open"]
    rc, text, _ = w.cli("status", "--state-dir", str(w.state), json_out=False)
    assert rc == 0 and "finished: done" in text and "orthanc-e2e" in text


def test_the_old_db_index_is_byte_identical_after_a_run(world_factory, data):
    w = world_factory().start()
    w.upload(data[:3])
    w.stop()  # a stopped service: the plan's stop is a no-op and the index is quiet
    index_sha = sha256(w.db / "index")
    w.start()
    plan = w.plan(FULL.format(to=json.dumps(str(w.db.parent / "db-v7"))))
    rc, report, err = w.cli("run", str(plan))
    assert rc == 0, (report, err)
    # Orthanc wrote nothing after our stop (it checkpoints at its own stop), and we never write.
    assert sha256(w.db / "index") == index_sha


def test_dry_run_changes_nothing_and_lists_exactly_the_changes_run_makes(world_factory, data):
    w = world_factory().start()
    w.upload(data[:6])
    plan = w.plan(FULL.format(to=json.dumps(str(w.db.parent / "db-v7"))))
    time.sleep(1)  # let the uploads settle into the index
    before = tree_digest(w.config_dir), tree_digest(w.db)
    pid = w.processes()[0].pid
    rc, planned, err = w.cli("plan", str(plan))
    assert rc == 0, (planned, err)
    assert planned["outcome"] == "planned" and planned["mode"] == "plan"
    assert not w.state.exists()  # a dry run writes no journal
    assert (tree_digest(w.config_dir), tree_digest(w.db)) == before
    assert [p.pid for p in w.processes()] == [pid]
    rc, ran, err = w.cli("run", str(plan))
    assert rc == 0, (ran, err)

    def norm(report):
        return [c.replace(report["run_id"], "<run>") for c in report["changes"]]

    assert norm(planned) == norm(ran)
    assert f"kill -TERM {pid}" in " ".join(ran["changes"])


def test_preflight_refuses_the_deadlock_combination_and_changes_nothing(world_factory, data):
    w = world_factory().start()
    w.upload(data[:3])
    w.stop()
    v5 = w.make_schema5_copy()
    w.start()
    before = tree_digest(w.config_dir), tree_digest(v5), sorted(p.name for p in w.db.parent.iterdir())
    plan = w.plan("  - preflight\n  - stop-service\n"
                  f"  - relocate: {{from: {json.dumps(str(v5))}, to: {json.dumps(str(w.db.parent / 'db-v6-new'))}}}\n"
                  "  - upgrade: {stall: 5}\n  - start-service\n  - health-check\n")
    rc, report, err = w.cli("run", str(plan))
    assert rc == 1, (report, err)
    assert "upgrade-deadlock" in report["error"] and "allow_hazards" in report["hint"]
    assert len(w.processes()) == 1  # still running, untouched
    assert (tree_digest(w.config_dir), tree_digest(v5),
            sorted(p.name for p in w.db.parent.iterdir())) == before


def test_the_real_deadlock_is_caught_by_the_watchdog_and_rolled_back(world_factory, data):
    """Debian package recovery on 1.10.1: upgrade a kept db-v5 while the service runs on db-v6."""
    w = world_factory().start()
    w.upload(data[:6])
    w.stop()
    v5 = w.make_schema5_copy()
    w.start()
    service_counts = w.counts()
    config_sha, v5_index_sha = sha256(w.config), sha256(v5 / "index")
    stall = 5
    plan = w.plan("  - preflight: {allow_hazards: [upgrade-deadlock]}\n  - stop-service\n"
                  f"  - relocate: {{from: {json.dumps(str(v5))}, to: {json.dumps(str(w.db.parent / 'db-v6-from-v5'))}}}\n"
                  f"  - upgrade: {{timeout: 300, stall: {stall}}}\n  - start-service\n  - health-check\n")
    rc, report, err = w.cli("run", str(plan))
    assert rc == 3, (report, err)
    upgrade = next(s for s in report["steps"] if s["id"] == "upgrade")
    assert upgrade["status"] == "failed" and "stalled" in upgrade["error"]
    assert "Upgrading database version from 5 to 6" in upgrade["error"]
    assert "1.12.8" in upgrade["hint"]
    # Old service healthy on its old state, old index byte-identical, no hung process left.
    assert w.counts() == service_counts and w.get("/system")["DatabaseVersion"] == 6
    assert sha256(w.config) == config_sha and sha256(v5 / "index") == v5_index_sha
    assert w.upgrade_processes() == [] and len(w.processes()) == 1
    assert not (w.db.parent / "db-v6-from-v5").exists()
    journal = (w.state / "orthanc-e2e.journal").read_text().splitlines()
    watch = [json.loads(x)["data"]["watch"] for x in journal if '"watch"' in x][-1]
    assert watch["ended"] == "stall" and watch["quiet"] >= stall
    print(f"\nwatchdog: stall window {stall}s, killed after {watch['elapsed']:.2f}s of --upgrade "
          f"({watch['quiet']:.2f}s without activity)")


def test_two_concurrent_runs_the_second_is_refused(world_factory, data):
    w = world_factory().start()
    w.upload(data[:3])
    plan = w.plan(FULL.format(to=json.dumps(str(w.db.parent / "db-v7"))))
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(plan), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=w.root)
    lock = w.state / "orthanc-e2e.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lock.exists() and lock.stat().st_size > 0):
        time.sleep(0.02)
    rc, second, err = w.cli("run", str(plan))
    out, _ = first.communicate(timeout=300)
    assert rc == 5 and "holds the lock" in second["error"], (second, err)
    assert first.returncode == 0, out
