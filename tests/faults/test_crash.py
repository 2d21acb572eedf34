"""kill -9 of the tool at every step boundary and inside the upgrade step.

After each crash: `status` explains (exit 5), `run` refuses (exit 5),
`rollback` brings back a healthy old service whose index is byte-identical and
whose config is unchanged; `resume` completes where the done steps still hold.
The crash is injected with ORCHESTRATOR_TEST_CRASH_AT=<step-id>:<before|during|after>,
which makes the engine SIGKILL itself right after journaling that point.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.world import UPGRADE_STEPS, sha256

pytestmark = pytest.mark.orthanc

STEPS = UPGRADE_STEPS

# Every boundary: each step's "after" (its done record is the last line), the "before" of each
# step that stops, rewrites or restarts something (started, nothing applied yet), and a crash
# inside the upgrade (the child's PID journaled, the child still running).
CRASH_POINTS = [
    "preflight:after", "snapshot-stage:after", "relocate-stage:after",
    "stop-service:before", "stop-service:after", "snapshot:after",
    "relocate:before", "relocate:after",
    "upgrade:before", "upgrade:during", "upgrade:after",
    "start-service:before", "start-service:after", "health-check:after",
]
RESUME_POINTS = ["stop-service:after", "relocate:after", "upgrade:during", "health-check:after"]


@pytest.fixture(scope="module")
def data():
    return make_dataset(3, per_series=3, rows=16, cols=16)


def _crashed(world_factory, data, point):
    """A world whose run was killed at `point`; return (world, plan, facts before)."""
    w = world_factory().start()
    w.upload(data)
    counts = w.counts()
    w.stop()
    before = {"counts": counts, "index": sha256(w.db / "index"), "config": sha256(w.config)}
    w.start()
    to = w.db.parent / "db-v7"
    plan = w.plan(STEPS.format(to=json.dumps(str(to))))
    rc, out, err = w.cli("run", str(plan), env={"ORCHESTRATOR_TEST_CRASH_AT": point})
    assert rc == -9, (point, out, err)
    return w, plan, to, before


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_status_explains_and_rollback_restores_after_a_crash(world_factory, data, point):
    w, plan, to, before = _crashed(world_factory, data, point)
    step, where = point.split(":")
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 5 and status["run"]["open"], status
    states = {s["id"]: s["state"] for s in status["run"]["steps"]}
    assert states[step] == ("done" if where == "after" else "started")
    if point in ("stop-service:after", "upgrade:during"):
        rc, text, _ = w.cli("status", str(plan), json_out=False)
        assert "INTERRUPTED" in text and "orchestrator rollback" in text
        rc, refused, _ = w.cli("run", str(plan))
        assert rc == 5 and "unfinished" in refused["error"]

    rc, report, err = w.cli("rollback", str(plan))
    assert rc == 0, (point, report, err)
    assert w.counts() == before["counts"] and w.get("/system")["DatabaseVersion"] == 6
    assert sha256(w.config) == before["config"]
    assert len(w.processes()) == 1 and w.upgrade_processes() == []
    assert not to.exists() or not any(to.iterdir())
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 0 and not status["run"]["open"]
    # The old service runs on its old index: in WAL mode the index file itself stays as it
    # was at the clean stop before the run until something is written.
    assert sha256(w.db / "index") == before["index"]


@pytest.mark.parametrize("point", RESUME_POINTS)
def test_resume_completes_after_a_crash(world_factory, data, point):
    w, plan, to, before = _crashed(world_factory, data, point)
    rc, report, err = w.cli("resume", str(plan))
    assert rc == 0, (point, report, err)
    statuses = {s["id"]: s["status"] for s in report["steps"]}
    assert statuses["health-check"] in ("done", "verified")
    assert w.counts() == before["counts"]
    assert json.dumps(str(to)) in w.config.read_text()
    assert len(w.processes()) == 1 and w.upgrade_processes() == []
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 0 and status["run"]["outcome"] == "done"


def test_resume_refuses_when_a_done_step_no_longer_holds(world_factory, data):
    w, plan, to, before = _crashed(world_factory, data, "snapshot:after")
    w.start()  # someone started the service again by hand
    rc, report, err = w.cli("resume", str(plan))
    assert rc == 1 and "no longer holds" in report["error"], (report, err)
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 5  # still open: rollback is the way out
    w.stop()
    rc, report, err = w.cli("rollback", str(plan))
    assert rc == 0, (report, err)
    assert w.counts() == before["counts"] and sha256(w.config) == before["config"]


def test_a_crash_inside_a_hung_upgrade_leaves_an_orphan_that_rollback_ends(world_factory, data):
    """The tool dies while 1.10.1 deadlocks: rollback finds the --upgrade by PID and ends it."""
    w = world_factory().start()
    w.upload(data)
    w.stop()
    v5 = w.make_schema5_copy()
    v5_index = sha256(v5 / "index")
    w.start()
    counts, config = w.counts(), sha256(w.config)
    plan = w.plan("  - preflight: {allow_hazards: [upgrade-deadlock]}\n  - stop-service\n"
                  f"  - relocate: {{from: {json.dumps(str(v5))}, to: {json.dumps(str(w.db.parent / 'db-v6-new'))}}}\n"
                  "  - upgrade: {timeout: 600, stall: 300}\n  - start-service\n  - health-check\n")
    rc, out, err = w.cli("run", str(plan), env={"ORCHESTRATOR_TEST_CRASH_AT": "upgrade:during"})
    assert rc == -9, (out, err)
    orphans = w.upgrade_processes()
    assert len(orphans) == 1  # hung, and nobody watches it any more
    rc, status, _ = w.cli("status", str(plan))
    pid = next(s for s in status["run"]["steps"] if s["id"] == "upgrade")["progress"]["pid"]
    assert pid == orphans[0].pid
    rc, report, err = w.cli("rollback", str(plan))
    assert rc == 0, (report, err)
    assert w.upgrade_processes() == [] and len(w.processes()) == 1
    assert w.counts() == counts and sha256(w.config) == config and sha256(v5 / "index") == v5_index
