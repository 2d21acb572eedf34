"""`orchestrator.runs` called directly (no CLI, no click), against a real Orthanc 1.10.1.

The fleet path and embedding programs call these functions; the CLI is only one caller.
"""

from __future__ import annotations

import json

import pytest

from orchestrator import runs
from orchestrator.engine import Outcome
from orchestrator.errors import ExitCode, JournalOpenError
from orchestrator.plan import load_plan
from tests.harness.dicom import make_dataset
from tests.harness.world import UPGRADE_STEPS, sha256

pytestmark = pytest.mark.orthanc

STEPS = UPGRADE_STEPS


@pytest.fixture(scope="module")
def data():
    return make_dataset(3, per_series=2, rows=16, cols=16)


def _world(world_factory, data):
    w = world_factory().start()
    w.upload(data)
    to = w.db.parent / "db-v7"
    return w, w.plan(STEPS.format(to=json.dumps(str(to)))), to


def test_preview_describes_every_step_and_changes_nothing(world_factory, data):
    w, plan_path, to = _world(world_factory, data)
    pids, config = [p.pid for p in w.processes()], sha256(w.config)
    report = runs.preview(load_plan(plan_path))
    assert report.exit_code == ExitCode.OK and report.outcome == Outcome.PLANNED
    assert {s.status.value for s in report.steps} == {"would do"}
    assert any(str(to) in c for c in report.changes)
    assert [p.pid for p in w.processes()] == pids and sha256(w.config) == config
    assert not to.exists() and not (w.state / "orthanc-e2e.journal").exists()


def test_run_then_status_then_nothing_to_roll_back(world_factory, data):
    w, plan_path, to = _world(world_factory, data)
    counts = w.counts()
    plan = load_plan(plan_path)
    report = runs.run(plan)
    assert report.exit_code == ExitCode.OK, report.error
    assert w.counts() == counts and json.dumps(str(to)) in w.config.read_text()
    view = runs.status(plan)
    assert view.exit_code == ExitCode.OK and view.history.outcome.value == "done"
    assert view.where == w.state / "orthanc-e2e.journal"
    assert isinstance(runs.rollback(plan), runs.NothingToDo)


def test_after_a_crash_run_refuses_and_rollback_restores(world_factory, data):
    w, plan_path, to = _world(world_factory, data)
    counts, config = w.counts(), sha256(w.config)
    rc, _, err = w.cli("run", str(plan_path), env={"ORCHESTRATOR_TEST_CRASH_AT": "relocate:after"})
    assert rc == -9, err
    plan = load_plan(plan_path)
    assert runs.status(plan).exit_code == ExitCode.JOURNAL_OPEN
    with pytest.raises(JournalOpenError) as info:
        runs.run(plan)
    assert str(plan_path) in info.value.hint
    report = runs.rollback(plan)
    assert report.exit_code == ExitCode.OK, report.error
    assert report.outcome == Outcome.ROLLED_BACK
    assert sha256(w.config) == config and w.counts() == counts
    assert runs.status(plan).exit_code == ExitCode.OK
