"""The engine with scripted fake steps: order, journal, undo newest-first, exit codes, dry run."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from orchestrator.engine import Engine, Outcome, StepStatus
from orchestrator.errors import ExitCode, InputError, RefusedError, StepError
from orchestrator.host.changes import Changes
from orchestrator.host.clock import FakeClock
from orchestrator.journal import Journal, MemoryJournal, StepState
from orchestrator.run_report import Downtime
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent

# The scripted kinds that open and close the service's downtime, as the real step classes
# declare it (the engine no longer matches kinds by name).
DOWNTIME = {"stop-service": Downtime.BEGINS, "start-service": Downtime.ENDS,
            "health-check": Downtime.ENDS}


@dataclass(frozen=True, kw_only=True)
class ScriptedIntent(StepIntent):
    target: str


@dataclass(frozen=True, kw_only=True)
class ScriptedFacts(StepFacts):
    verified: bool = False


@dataclass
class FakeHost:
    changes: Changes
    clock: FakeClock = field(default_factory=FakeClock)


class Scripted(StepBase):
    """A step whose behaviour is data: `fail` names the phase that raises."""

    Intent = ScriptedIntent
    Facts = ScriptedFacts

    def __init__(self, step_id, log, *, change=True, fail=None, error=None, undo_fails=False,
                 holds=None, kind=None):
        super().__init__(step_id)
        self.kind = kind or step_id
        self.downtime = DOWNTIME.get(self.kind)
        self.log, self.change, self.fail = log, change, fail
        self.error = error or StepError(f"{step_id} broke", hint="fix it")
        self.undo_fails, self.holds_reason = undo_fails, holds

    def _maybe(self, phase):
        self.log.append((phase, self.id))
        if self.fail == phase:
            raise self.error

    def describe(self):
        return f"do {self.id}"

    def check(self, host, ctx):
        self._maybe("check")
        return []

    def intend(self, host, ctx):
        self._maybe("intend")
        return ScriptedIntent(target=self.id)

    def apply(self, host, ctx, intent):
        if self.change:
            host.changes.apply(f"change {self.id}", lambda: self.log.append(("act", self.id)))
        self._maybe("apply")
        host.clock.sleep(1.0)
        return ScriptedFacts(summary=f"{self.id} ok")

    def verify(self, host, ctx, intent, facts):
        self._maybe("verify")
        return replace(facts, verified=True)

    def undo(self, host, ctx, record):
        self.log.append(("undo", self.id))
        if self.undo_fails:
            raise StepError(f"cannot undo {self.id}")
        host.changes.apply(f"undo {self.id}", lambda: None)
        return f"{self.id} undone"

    def holds(self, host, ctx, record):
        self.log.append(("holds", self.id))
        return self.holds_reason

    def manual_undo(self, ctx, record):
        return f"undo {self.id} by hand"


@dataclass
class FakePlan:
    source: Path = Path("/plans/p.yaml")

    @dataclass
    class _Svc:
        name: str = "svc"

    service: _Svc = field(default_factory=_Svc)


def _engine(steps, *, dry=False, journal=None, mode="run", records=None):
    host = FakeHost(Changes(dry=dry))
    ctx = RunContext(FakePlan(), "run-1", Path("/tmp/none"), dict(records or {}))
    return Engine(steps, host, journal or MemoryJournal(), ctx, mode=mode), host


def _events(journal):
    return [(r["event"], r.get("step")) for r in journal.records()[0]]


def test_happy_path_runs_every_step_in_order_and_journals_around_each():
    log = []
    steps = [Scripted(n, log) for n in ("a", "b", "c")]
    j = MemoryJournal()
    engine, host = _engine(steps, journal=j)
    report = engine.execute()
    assert report.exit_code == ExitCode.OK and report.outcome == Outcome.DONE
    assert [p for p in log if p[0] in ("check", "apply")] == \
        [("check", "a"), ("check", "b"), ("check", "c"), ("apply", "a"), ("apply", "b"), ("apply", "c")]
    assert _events(j) == [("run-started", None), ("step-started", "a"), ("step-done", "a"),
                          ("step-started", "b"), ("step-done", "b"), ("step-started", "c"),
                          ("step-done", "c"), ("run-finished", None)]
    assert [s.status for s in report.steps] == [StepStatus.DONE] * 3
    assert report.changes == ["change a", "change b", "change c"]
    assert [s.seconds for s in report.steps] == [1.0, 1.0, 1.0]
    done = j.records()[0][2]
    assert done["facts"] == {"summary": "a ok", "verified": True} and done["changes"] == ["change a"]


def test_failure_undoes_touched_steps_newest_first_including_the_one_in_flight():
    log = []
    steps = [Scripted("a", log), Scripted("b", log), Scripted("c", log, fail="apply"),
             Scripted("d", log)]
    j = MemoryJournal()
    engine, _ = _engine(steps, journal=j)
    report = engine.execute()
    assert report.exit_code == ExitCode.ROLLED_BACK and report.outcome == Outcome.ROLLED_BACK
    assert [p for p in log if p[0] == "undo"] == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert ("apply", "d") not in log
    assert [s.status for s in report.steps] == [StepStatus.UNDONE, StepStatus.UNDONE,
                                                StepStatus.FAILED, StepStatus.NOT_RUN]
    assert report.error == "c: c broke" and report.hint == "fix it"
    assert ("step-failed", "c") in _events(j) and _events(j)[-1] == ("run-finished", None)
    assert j.records()[0][-1]["outcome"] == "rolled-back"


def test_a_failing_verify_rolls_back_the_step_it_verified():
    log = []
    engine, _ = _engine([Scripted("a", log), Scripted("b", log, fail="verify")])
    report = engine.execute()
    assert report.exit_code == ExitCode.ROLLED_BACK
    assert [p for p in log if p[0] == "undo"] == [("undo", "b"), ("undo", "a")]


def test_undo_errors_do_not_stop_the_rollback_and_give_exit_4_with_instructions():
    log = []
    steps = [Scripted("a", log), Scripted("b", log, undo_fails=True), Scripted("c", log, fail="apply")]
    j = MemoryJournal()
    engine, _ = _engine(steps, journal=j)
    report = engine.execute()
    assert report.exit_code == ExitCode.ROLLBACK_INCOMPLETE
    assert [p for p in log if p[0] == "undo"] == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert report.manual[0] == "b: undo b by hand"
    assert "orchestrator rollback /plans/p.yaml" in report.manual[-1]
    assert report.steps[1].status == StepStatus.UNDO_FAILED
    assert j.records()[0][-1]["outcome"] == "rollback-incomplete"


def test_nothing_changed_means_refused_exit_1_and_no_undo():
    log = []
    steps = [Scripted("pre", log, change=False, fail="apply",
                      error=RefusedError("blocked", hint="h")), Scripted("b", log)]
    engine, _ = _engine(steps)
    report = engine.execute()
    assert report.exit_code == ExitCode.REFUSED and report.outcome == Outcome.REFUSED
    assert not [p for p in log if p[0] == "undo"]


def test_a_check_failure_is_reported_with_its_exit_code_before_anything_runs():
    log = []
    steps = [Scripted("a", log), Scripted("b", log, fail="check", error=InputError("bad option"))]
    engine, _ = _engine(steps)
    report = engine.execute()
    assert report.exit_code == ExitCode.BAD_INPUT
    assert not [p for p in log if p[0] == "apply"]


def test_ctrl_c_and_bugs_roll_back_too():
    for error, code in ((KeyboardInterrupt(), ExitCode.ROLLED_BACK), (ZeroDivisionError("x"),
                                                                       ExitCode.ROLLED_BACK)):
        log = []
        steps = [Scripted("a", log), Scripted("b", log, fail="apply", error=error)]
        engine, _ = _engine(steps)
        report = engine.execute()
        assert report.exit_code == code
        assert [p for p in log if p[0] == "undo"] == [("undo", "b"), ("undo", "a")]
    assert report.trace and "ZeroDivisionError" in report.trace
    assert "internal error" in report.error


def test_dry_run_records_changes_skips_verify_and_never_undoes():
    log = []
    steps = [Scripted("a", log), Scripted("b", log)]
    engine, host = _engine(steps, dry=True, mode="plan")
    report = engine.execute()
    assert report.outcome == Outcome.PLANNED and report.exit_code == ExitCode.OK
    assert ("act", "a") not in log and not [p for p in log if p[0] == "verify"]
    assert report.changes == ["change a", "change b"]
    assert [s.status for s in report.steps] == [StepStatus.WOULD, StepStatus.WOULD]
    log.clear()
    steps = [Scripted("a", log), Scripted("b", log, fail="apply")]
    engine, _ = _engine(steps, dry=True, mode="plan")
    report = engine.execute()
    assert report.exit_code == ExitCode.REFUSED and not [p for p in log if p[0] == "undo"]


def _crashed_journal(tmp_path, states):
    """A journal left by a crash: `states` maps step id -> how far it got."""
    j = Journal(tmp_path / "svc.journal")
    from orchestrator.journal import Event

    ids = list(states)
    j.append(Event.RUN_STARTED, run_id="run-1", plan="/plans/p.yaml", plan_sha256="",
             service="svc", pid=1, host="h", steps=[{"id": i, "kind": i} for i in ids])
    for i, state in states.items():
        if state == "pending":
            continue
        j.append(Event.STEP_STARTED, step=i, intent={"target": i})
        if state == "done":
            j.append(Event.STEP_DONE, step=i, facts={"summary": i}, changes=[f"change {i}"])
    return j


def test_rollback_of_a_crashed_run_undoes_done_and_in_flight_steps(tmp_path):
    j = _crashed_journal(tmp_path, {"a": "done", "b": "done", "c": "started", "d": "pending"})
    history = j.last_run()
    log = []
    steps = [Scripted(n, log) for n in "abcd"]
    engine, _ = _engine(steps, journal=j, mode="rollback", records=history.steps)
    report = engine.rollback(history)
    assert report.exit_code == ExitCode.OK
    assert [p for p in log if p[0] == "undo"] == [("undo", "c"), ("undo", "b"), ("undo", "a")]
    assert not j.last_run().open and j.last_run().steps["a"].state == StepState.UNDONE


def test_resume_verifies_done_steps_redoes_the_one_in_flight_and_finishes(tmp_path):
    j = _crashed_journal(tmp_path, {"a": "done", "b": "started", "c": "pending"})
    history = j.last_run()
    log = []
    steps = [Scripted(n, log) for n in "abc"]
    engine, _ = _engine(steps, journal=j, mode="resume", records=history.steps)
    report = engine.resume(history)
    assert report.exit_code == ExitCode.OK, report.error
    assert log.index(("holds", "a")) < log.index(("undo", "b")) < log.index(("apply", "b"))
    assert ("apply", "a") not in log and ("apply", "c") in log
    assert report.steps[0].status == StepStatus.VERIFIED
    assert not j.last_run().open


def test_resume_refuses_when_a_done_step_no_longer_holds_and_leaves_the_run_open(tmp_path):
    j = _crashed_journal(tmp_path, {"a": "done", "b": "pending"})
    history = j.last_run()
    log = []
    steps = [Scripted("a", log, holds="the service runs again"), Scripted("b", log)]
    engine, _ = _engine(steps, journal=j, mode="resume", records=history.steps)
    report = engine.resume(history)
    assert report.exit_code == ExitCode.REFUSED and "no longer holds" in report.error
    assert "orchestrator rollback" in report.hint
    assert j.last_run().open and ("apply", "b") not in log


def test_a_failure_during_resume_rolls_back_the_earlier_steps_too(tmp_path):
    j = _crashed_journal(tmp_path, {"a": "done", "b": "pending"})
    history = j.last_run()
    log = []
    steps = [Scripted("a", log), Scripted("b", log, fail="apply")]
    engine, _ = _engine(steps, journal=j, mode="resume", records=history.steps)
    report = engine.resume(history)
    assert report.exit_code == ExitCode.ROLLED_BACK
    assert [p for p in log if p[0] == "undo"] == [("undo", "b"), ("undo", "a")]


def test_resume_with_another_plan_is_refused(tmp_path):
    j = _crashed_journal(tmp_path, {"a": "done"})
    history = j.last_run()
    engine, _ = _engine([Scripted("x", [])], journal=j, mode="resume", records=history.steps)
    with pytest.raises(InputError):
        engine.resume(history)


def _upgrade_steps() -> list:
    """The upgrade's step kinds in order, scripted to succeed."""
    log: list = []
    return [Scripted("pre", log, kind="preflight"), Scripted("stop", log, kind="stop-service"),
            Scripted("up", log, kind="upgrade"), Scripted("start", log, kind="start-service"),
            Scripted("health", log, kind="health-check")]


def test_downtime_runs_from_the_stop_to_the_health_check():
    steps = _upgrade_steps()
    engine, _ = _engine(steps)
    report = engine.execute()
    assert report.downtime == pytest.approx(4.0)
    assert report.to_dict()["downtime"] == 4.0


def test_the_text_report_of_an_incomplete_rollback_lists_what_to_do_in_order():
    from orchestrator.report.run import render_report

    log = []
    steps = [Scripted("a", log, undo_fails=True), Scripted("b", log, fail="apply")]
    engine, _ = _engine(steps)
    text = render_report(engine.execute())
    assert "rollback is INCOMPLETE" in text and "(exit 4)" in text
    todo = text.split("DO THIS NOW, in order:")[1].strip().splitlines()
    assert todo[0].strip() == "1. a: undo a by hand"
    assert "orchestrator rollback /plans/p.yaml" in todo[1]


def test_a_journal_that_cannot_be_written_stops_the_run_and_the_rollback_still_happens():
    from orchestrator.journal import JournalWriteError

    class FullDisk(MemoryJournal):
        def __init__(self, fail_after):
            super().__init__()
            self.fail_after = fail_after

        def append(self, event, **fields):
            if len(self.lines) >= self.fail_after:
                raise JournalWriteError("cannot write the journal: No space left on device")
            return super().append(event, **fields)

    log = []
    steps = [Scripted("a", log), Scripted("b", log), Scripted("c", log)]
    engine, _ = _engine(steps, journal=FullDisk(fail_after=4))  # run, a started+done, b started
    report = engine.execute()
    assert report.exit_code == ExitCode.ROLLED_BACK
    assert "No space left" in report.error
    assert [p for p in log if p[0] == "undo"] == [("undo", "b"), ("undo", "a")]
    assert ("apply", "c") not in log
    assert any("journal is incomplete" in m for m in report.manual)


def test_the_text_report_draws_a_timeline_with_the_downtime_window():
    from orchestrator.report.run import render_report, render_timeline

    steps = _upgrade_steps()
    engine, _ = _engine(steps)
    report = engine.execute()
    lines = render_timeline(report, width=40)
    assert lines[0].startswith("timeline (0 to ")
    bars = {line.split("|")[0].strip(): line.split("|")[1] for line in lines[1:]}
    assert set(bars) == {"pre", "stop", "up", "start", "health", "downtime"}
    assert all(len(bar) == 40 for bar in bars.values())
    # The downtime window starts where stop-service starts and covers the later steps.
    assert bars["downtime"].index("▒") == bars["stop"].index("█")
    assert bars["downtime"].rstrip().endswith("▒") and bars["health"].rstrip().endswith("█")
    assert "timeline" in render_report(report)


class ScriptedProof:
    """The proof that ends a rollback, as data: `error` makes it fail."""

    def __init__(self, log, error=None):
        self.log, self.error = log, error

    def prove(self, host, ctx):
        self.log.append(("prove", None))
        if self.error is not None:
            raise self.error
        return ["the service is back: PID 7 answers"]

    def manual(self, ctx):
        return ["start the service by hand"]


def _proved(steps, proof, **kw):
    host = FakeHost(Changes(dry=kw.pop("dry", False)))
    ctx = RunContext(FakePlan(), "run-1", Path("/tmp/none"), {})
    return Engine(steps, host, MemoryJournal(), ctx, mode="run", proof=proof, **kw)


def test_a_rollback_ends_with_the_proof_after_every_undo():
    log = []
    report = _proved([Scripted("a", log), Scripted("b", log, fail="apply")],
                     ScriptedProof(log)).execute()
    assert report.exit_code == ExitCode.ROLLED_BACK
    assert [p[0] for p in log if p[0] in ("undo", "prove")] == ["undo", "undo", "prove"]
    assert "the service is back: PID 7 answers" in report.notes


def test_without_the_proof_a_rollback_is_incomplete_exit_4_with_the_manual_steps():
    for error in (StepError("the service is not running", hint="see its log"), KeyboardInterrupt()):
        log = []
        report = _proved([Scripted("a", log), Scripted("b", log, fail="apply")],
                         ScriptedProof(log, error)).execute()
        assert report.exit_code == ExitCode.ROLLBACK_INCOMPLETE
        assert report.outcome == Outcome.ROLLBACK_INCOMPLETE
        assert report.manual[0].startswith("the rollback could not prove the old service back")
        assert "start the service by hand" in report.manual
        assert "orchestrator rollback /plans/p.yaml" in report.manual[-1]


def test_no_proof_when_nothing_was_changed_or_in_a_dry_run():
    log = []
    _proved([Scripted("a", log, change=False, fail="apply", error=RefusedError("no"))],
            ScriptedProof(log)).execute()
    _proved([Scripted("a", log), Scripted("b", log, fail="apply")], ScriptedProof(log),
            dry=True).execute()
    assert ("prove", None) not in log
