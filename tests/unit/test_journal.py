"""The journal (records, torn tail, last run) and the run lock (exclusion, stale owner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orchestrator.errors import ExitCode, InputError, JournalOpenError
from orchestrator.journal import Event, Journal, RunOutcome, StepState, safe_name
from orchestrator.lock import RunLock, read_lock_owner


def _start(j: Journal, steps=("a", "b")) -> None:
    j.append(Event.RUN_STARTED, run_id="r1", plan="/p.yaml", plan_sha256="x", service="svc",
             pid=123, host="h", steps=[{"id": s, "kind": s} for s in steps])


def test_records_and_last_run_states(tmp_path):
    j = Journal(tmp_path / "svc.journal")
    _start(j)
    j.append(Event.STEP_STARTED, step="a", intent={"x": 1})
    j.append(Event.STEP_DONE, step="a", facts={"summary": "ok"}, changes=["did a"])
    j.append(Event.STEP_STARTED, step="b", intent={})
    j.append(Event.STEP_PROGRESS, step="b", data={"pid": 42})
    run = j.last_run()
    assert run.run_id == "r1" and run.open and run.outcome is None
    a, b = run.steps["a"], run.steps["b"]
    assert (a.state, a.intent, a.facts, a.changes) == (StepState.DONE, {"x": 1}, {"summary": "ok"},
                                                        ["did a"])
    assert (b.state, b.progress, b.changes) == (StepState.STARTED, {"pid": 42}, None)
    assert a.needs_undo and b.needs_undo  # b's changes are unknown: in flight at a crash
    j.append(Event.RUN_FINISHED, outcome="rolled-back", exit_code=3, message="boom")
    run = j.last_run()
    assert not run.open and run.outcome == RunOutcome.ROLLED_BACK and run.exit_code == 3


def test_each_record_is_one_json_line_on_disk(tmp_path):
    j = Journal(tmp_path / "svc.journal")
    _start(j)
    j.append(Event.STEP_STARTED, step="a", intent={"path": "/a b/'quoted';"})
    lines = (tmp_path / "svc.journal").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x)["event"] for x in lines[:-1])


def test_a_step_without_changes_needs_no_undo(tmp_path):
    j = Journal(tmp_path / "svc.journal")
    _start(j)
    j.append(Event.STEP_STARTED, step="a", intent={})
    j.append(Event.STEP_DONE, step="a", facts={}, changes=[])
    assert not j.last_run().steps["a"].needs_undo


def test_torn_tail_is_ignored_then_cut_before_the_next_append(tmp_path):
    path = tmp_path / "svc.journal"
    j = Journal(path)
    _start(j)
    j.append(Event.STEP_STARTED, step="a", intent={})
    with open(path, "ab") as f:
        f.write(b'{"event": "step-done", "step": "a", "fac')  # a crash mid-write
    run = j.last_run()
    assert run.torn_tail and run.steps["a"].state == StepState.STARTED
    j.append(Event.STEP_FAILED, step="a", error="x")
    records, torn = j.records()
    assert not torn and [r["event"] for r in records][-2:] == ["step-started", "step-failed"]
    assert b"fac" not in path.read_bytes()


def test_a_damaged_middle_line_is_bad_input(tmp_path):
    path = tmp_path / "svc.journal"
    path.write_text('{"event": "run-started"}\nnot json\n{"event": "run-finished"}\n')
    with pytest.raises(InputError) as err:
        Journal(path).last_run()
    assert ":2:" in err.value.message


def test_the_last_run_wins_and_resumed_reopens(tmp_path):
    j = Journal(tmp_path / "svc.journal")
    _start(j)
    j.append(Event.RUN_FINISHED, outcome="rollback-incomplete", exit_code=4, message="m")
    assert j.last_run().open
    j.append(Event.RUN_RESUMED, mode="rollback", pid=1, host="h")
    run = j.last_run()
    assert run.open and run.outcome is None
    j.append(Event.RUN_FINISHED, outcome="done", exit_code=0)
    j.append(Event.RUN_STARTED, run_id="r2", plan="/p", steps=[{"id": "z", "kind": "z"}])
    run = j.last_run()
    assert run.run_id == "r2" and list(run.steps) == ["z"] and run.open


def test_no_journal_means_no_run(tmp_path):
    assert Journal(tmp_path / "none.journal").last_run() is None


def test_safe_name_keeps_files_inside_the_state_folder():
    assert safe_name("orthanc") == "orthanc"
    assert "/" not in safe_name("../../etc/passwd") and not safe_name("-rf").startswith("-")
    assert safe_name("a b;c") == "a_b_c"


def test_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    first = RunLock.for_service(tmp_path, "svc").acquire("run")
    try:
        with pytest.raises(JournalOpenError) as err:
            RunLock.for_service(tmp_path, "svc").acquire("run")
        assert err.value.exit_code == ExitCode.JOURNAL_OPEN
        assert f"pid {os.getpid()}" in err.value.message
        owner = read_lock_owner(tmp_path / "svc.lock")
        assert owner is not None and owner.pid == os.getpid()
    finally:
        first.release()
    assert read_lock_owner(tmp_path / "svc.lock") is None
    RunLock.for_service(tmp_path, "svc").acquire("run").release()


def test_stale_lock_of_a_dead_pid_is_recovered_with_a_message(tmp_path):
    code = ("import sys, os; sys.path.insert(0, sys.argv[2]);"
            "from orchestrator.lock import RunLock;"
            "RunLock.for_service(sys.argv[1], 'svc').acquire('run'); os._exit(0)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    dead = subprocess.run([sys.executable, "-c", code, str(tmp_path), root], check=True)
    assert dead.returncode == 0
    lock = RunLock.for_service(tmp_path, "svc").acquire("run")
    try:
        msg = lock.stale_message()
        assert msg is not None and "stale lock" in msg and "no longer running" in msg
    finally:
        lock.release()
