"""`orchestrator.runs` without an Orthanc: what needs no service (locks, journals, signals).

The same functions against a real Orthanc are in tests/integration/test_runs.py.
"""

from __future__ import annotations

import signal
import threading

import pytest

from orchestrator import runs
from orchestrator.errors import ExitCode, InputError, JournalOpenError
from orchestrator.journal import Event, Journal
from orchestrator.lock import RunLock
from orchestrator.plan import parse_plan


def _plan(state):
    return parse_plan(f"version: 1\nstate_dir: {state}\n"
                      "service: {name: orch-unit, binary: /usr/sbin/Orthanc, config: /nonexistent}\n"
                      "steps:\n  - stop-service\n  - start-service\n", "unit-plan.yaml")


def _open_journal(state, name="orch-unit"):
    Journal.for_service(state, name).append(Event.RUN_STARTED, run_id="r1", mode="run",
                                            plan="unit-plan.yaml", service=name, pid=1, host="h",
                                            steps=[])


def test_rollback_and_resume_without_a_journal_have_nothing_to_do(tmp_path):
    plan = _plan(tmp_path / "state")
    for call, mode in ((runs.rollback, "rollback"), (runs.resume, "resume")):
        result = call(plan)
        assert isinstance(result, runs.NothingToDo) and result.exit_code == ExitCode.OK
        assert result.to_dict() == {"ok": True, "exit_code": 0, "command": mode, "mode": mode,
                                    "outcome": "nothing-to-do",
                                    "message": f"no run recorded: nothing to {mode}"}


def test_status_reads_the_plans_state_dir_and_says_an_open_run_is_exit_5(tmp_path):
    state = tmp_path / "state"
    plan = _plan(state)
    assert runs.status(plan).history is None
    _open_journal(state)
    view = runs.status(plan)
    assert view.where == state / "orch-unit.journal"
    assert view.history.open and view.exit_code == ExitCode.JOURNAL_OPEN
    assert view.to_dict()["exit_code"] == 5 and view.plan.name == "unit-plan.yaml"


def test_bare_status_reads_only_the_given_state_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_STATE_DIR", raising=False)
    state = tmp_path / "state"
    _open_journal(state)
    assert runs.status(state_dir=tmp_path / "elsewhere").history is None
    assert runs.status(state_dir=state).history.run_id == "r1"


def test_run_refuses_an_open_journal_and_names_the_plan(tmp_path):
    state = tmp_path / "state"
    _open_journal(state)
    with pytest.raises(JournalOpenError) as info:
        runs.run(_plan(state))
    assert "unit-plan.yaml" in info.value.hint
    assert RunLock.for_service(state, "orch-unit").acquire("test")  # released again


def test_a_held_lock_is_refused_with_a_hint_naming_the_plan(tmp_path):
    state = tmp_path / "state"
    lock = RunLock.for_service(state, "orch-unit")
    done = threading.Event()

    def hold():  # flock is per open file: another fd in this process conflicts too
        lock.acquire("holder")
        done.wait(10)
        lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        for _ in range(100):
            if lock.fd is not None:
                break
            threading.Event().wait(0.01)
        with pytest.raises(JournalOpenError) as info:
            runs.rollback(_plan(state))
        assert "orchestrator status unit-plan.yaml" in info.value.hint
    finally:
        done.set()
        holder.join()


def test_without_sighup_as_on_windows_the_lock_is_still_taken(tmp_path, monkeypatch):
    """Windows' signal module has no SIGHUP: a run must not die on AttributeError."""
    monkeypatch.delattr(signal, "SIGHUP")
    before = signal.getsignal(signal.SIGTERM)
    result = runs.rollback(_plan(tmp_path / "state"))
    assert isinstance(result, runs.NothingToDo)
    assert signal.getsignal(signal.SIGTERM) is before  # put back


def test_the_signal_handlers_are_put_back_after_a_failure(tmp_path):
    state = tmp_path / "state"
    _open_journal(state)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(InputError):  # the plan's config does not exist: refused under the lock
        runs.rollback(_plan(state))
    assert signal.getsignal(signal.SIGTERM) is before
    assert RunLock.for_service(state, "orch-unit").acquire("test")  # released again
