"""Apply a plan's steps in order on a Host; on failure undo what they touched, newest first.

The engine knows steps only through the `Step` protocol and the machine only
through the host's `Changes` recorder, so one loop serves the real run, the
dry run (`plan`), `resume` and `rollback`:

- every step is journaled `started` (with its intent) before it acts and
  `done` (with its facts) after it is verified, so a crash leaves a true record;
- a failure (an error, a bug, Ctrl-C) undoes every touched step newest-first,
  the one in flight included, keeps going through undo errors and reports them;
- a dry run records changes instead of making them and skips `verify`, which
  only checks the effect of a change that was not made;
- a rollback ends with the caller's `prove` (the old service back, whole, able
  to store): without that proof it is reported incomplete, never done.

Exit codes: 0 done, 1 refused before any change, 2 bad input, 3 rolled back,
4 rollback incomplete (the report says exactly what to do), 5 journal open.
"""

from __future__ import annotations

import os
import signal
import socket
import traceback
from collections.abc import Callable
from typing import Protocol

from orchestrator.errors import ExitCode, InputError, OrchestratorError, RefusedError
from orchestrator.journal import (Event, Journal, JournalWriteError, RunHistory, RunOutcome,
                                  StepRecord, StepState)
from orchestrator.run_report import (Downtime, Outcome, RunReport, StepReport, StepStatus,
                                     downtime, plan_path, step_detail)
from orchestrator.steps.base import Host, RunContext, StepFacts, StepIntent, StepOptions

CRASH_ENV = "ORCHESTRATOR_TEST_CRASH_AT"  # tests only: "<step-id>:<before|during|after>"


class Step(Protocol):
    """One plan step (the contract: steps/base.py and docs/architecture.md). Only `apply` and
    `undo` change anything, through the host's ports; `check`, `intend`, `verify` and
    `holds` only read; `manual_undo` says what to do by hand when `undo` failed."""

    id: str
    kind: str
    line: int | None
    options: StepOptions
    downtime: Downtime | None

    def describe(self) -> str: ...
    def check(self, host: Host, ctx: RunContext) -> list[str]: ...
    def intend(self, host: Host, ctx: RunContext) -> StepIntent: ...
    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> StepFacts: ...
    def verify(self, host: Host, ctx: RunContext, intent: StepIntent, facts: StepFacts) -> StepFacts: ...
    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str: ...
    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None: ...
    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str: ...
    def facts_of(self, record: StepRecord) -> StepFacts | None: ...


def _observe_nothing(event: str, **data: object) -> None: ...


class Proof(Protocol):
    """What ends a rollback: `prove` the old service back and return the notes to report
    (raise OrchestratorError saying what does not hold); `manual` says what to do by hand."""

    def prove(self, host: Host, ctx: RunContext) -> list[str]: ...
    def manual(self, ctx: RunContext) -> list[str]: ...


class Engine:
    """Run steps on a host with a journal; one instance per command."""

    def __init__(self, steps: list[Step], host: Host, journal: Journal, ctx: RunContext, *,
                 mode: str, plan_sha256: str = "", observe: Callable[..., None] = _observe_nothing,
                 proof: Proof | None = None):
        self.steps = steps
        self.host = host
        self.journal = journal
        self.ctx = ctx
        self.dry = host.changes.dry
        self.mode = mode
        self.plan_sha256 = plan_sha256
        self.observe = observe
        self.proof = proof
        self.t0 = host.clock.now()
        self.error: BaseException | None = None
        self.undoing = False
        plan = ctx.plan
        self.report = RunReport(mode, ctx.run_id, plan_path(plan),
                                getattr(getattr(plan, "service", None), "name", "?"),
                                [StepReport(s.id, str(s.kind), s.describe(),
                                            downtime=getattr(s, "downtime", None)) for s in steps])
        self.by_id = {r.id: r for r in self.report.steps}
        for s in steps:
            ctx.records.setdefault(s.id, StepRecord(s.id, str(s.kind)))
        ctx.steps = list(steps)
        ctx.progress = self._progress
        ctx.persist = self._persist

    # -- public entry points ---------------------------------------------------------
    def execute(self) -> RunReport:
        """Check every step, then apply them in order; roll back on failure."""
        self._journal(Event.RUN_STARTED, run_id=self.ctx.run_id, mode=self.mode,
                      plan=self.report.plan, plan_sha256=self.plan_sha256,
                      service=self.report.service, pid=os.getpid(), host=socket.gethostname(),
                      steps=[{"id": s.id, "kind": str(s.kind), "options": s.options.to_json()}
                             for s in self.steps])
        if self._check(self.steps):
            self._forward(self.steps)
        return self._finish()

    def resume(self, history: RunHistory) -> RunReport:
        """Verify the done steps of an interrupted run, then continue forwards."""
        self._match(history)
        self._journal(Event.RUN_RESUMED, mode="resume", pid=os.getpid(), host=socket.gethostname())
        todo: list[Step] = []
        for step in self.steps:
            rec = self.ctx.records[step.id]
            row = self.by_id[step.id]
            if todo or rec.state == StepState.PENDING:
                todo.append(step)
            elif rec.state == StepState.DONE:
                reason = self._call(lambda: step.holds(self.host, self.ctx, rec))
                if reason:
                    return self._refuse(RefusedError(
                        f"cannot resume: step {step.id} was done but no longer holds: {reason}",
                        hint=f"finish the run backwards: orchestrator rollback {self.report.plan}"))
                facts = step.facts_of(rec)
                notes = facts.notes if facts else ()
                row.status, row.notes = StepStatus.VERIFIED, list(notes)
                row.detail = step_detail(facts.summary if facts else "", notes) or "still holds"
            elif rec.state in (StepState.STARTED, StepState.FAILED):
                # In flight at the crash: put back whatever it did, then run it again.
                if not self._undo_one(step, rec):
                    return self._finish_rollback(incomplete=True)
                rec.state = StepState.PENDING
                todo.append(step)
            else:
                return self._refuse(RefusedError(
                    f"cannot resume: a rollback of this run already started "
                    f"(step {step.id} is {rec.state.value})",
                    hint=f"finish it: orchestrator rollback {self.report.plan}"))
        if self._check(todo):
            self._forward(todo)
        return self._finish()

    def rollback(self, history: RunHistory) -> RunReport:
        """Undo, newest first, every step an interrupted run touched."""
        self._journal(Event.RUN_RESUMED, mode="rollback", pid=os.getpid(), host=socket.gethostname())
        self.report.error = history.message or "rollback requested"
        self._rollback()
        if self.report.outcome == Outcome.ROLLED_BACK:
            self.report.exit_code = ExitCode.OK  # asked for, and complete
        return self._finish()

    # -- the forward loop -------------------------------------------------------------
    def _check(self, steps: list[Step]) -> bool:
        for step in steps:
            try:
                self.report.warnings.extend(step.check(self.host, self.ctx) or [])
            except (Exception, KeyboardInterrupt) as exc:  # reported; nothing changed yet
                self._fail(step, exc)
                line = getattr(step, "line", None)
                if line:
                    self.report.error = f"{step.id} (plan line {line}): {self.by_id[step.id].error}"
                self._end_refused(exc)
                return False
        return True

    def _forward(self, steps: list[Step]) -> None:
        for step in steps:
            row = self.by_id[step.id]
            rec = self.ctx.records[step.id]
            mark = len(self.host.changes)
            row.start = self.host.clock.now() - self.t0
            self.observe("step-started", step=step.id, text=row.description)
            try:
                intent = step.intend(self.host, self.ctx)
                # The journal boundary: typed records in the steps, JSON objects on disk.
                rec.intent, rec.state, rec.changes = intent.to_json(), StepState.STARTED, None
                rec.facts, rec.progress = {}, {}
                self._journal(Event.STEP_STARTED, step=step.id, intent=rec.intent)
                _crash_point(step.id, "before")
                facts = step.apply(self.host, self.ctx, intent)
                rec.facts = facts.to_json()
                if not self.dry:
                    facts = step.verify(self.host, self.ctx, intent, facts)
                    rec.facts = facts.to_json()
                row.changes = self.host.changes.texts(mark)
                rec.state, rec.changes = StepState.DONE, row.changes
                self._journal(Event.STEP_DONE, step=step.id, facts=rec.facts, changes=row.changes)
            except (Exception, KeyboardInterrupt) as exc:  # every failure rolls back
                self.undoing = True  # from here on only backwards, even without a journal
                row.changes = self.host.changes.texts(mark)
                row.seconds = self.host.clock.now() - self.t0 - row.start
                self._fail(step, exc)
                self._after_failure()
                return
            _crash_point(step.id, "after")
            row.seconds = self.host.clock.now() - self.t0 - row.start
            row.status = StepStatus.WOULD if self.dry else StepStatus.DONE
            row.detail, row.notes = step_detail(facts.summary, facts.notes), list(facts.notes)
            self.report.notes.extend(f"{step.id}: {n}" for n in facts.notes)
            self.report.warnings.extend(facts.warnings)
            self.observe("step-finished", step=step.id, status=row.status.value,
                         seconds=row.seconds, detail=row.detail, changes=row.changes)

    def _after_failure(self) -> None:
        if self.dry or not any(r.needs_undo for r in self.ctx.records.values()):
            self._end_refused(self.error)
        else:
            self._rollback()

    def _fail(self, step: Step, exc: BaseException) -> None:
        row = self.by_id[step.id]
        rec = self.ctx.records[step.id]
        row.status = StepStatus.FAILED
        self.error = exc
        if isinstance(exc, OrchestratorError):
            row.error, row.hint = exc.message, exc.hint
        elif isinstance(exc, KeyboardInterrupt):
            row.error, row.hint = "interrupted", None
        else:
            row.error = f"internal error: {type(exc).__name__}: {exc}"
            row.hint = "this is a bug in orchestrator; please report the traceback"
            self.report.trace = "".join(traceback.format_exception(exc))
        self.report.error = f"{step.id}: {row.error}"
        self.report.hint = row.hint
        if rec.state == StepState.STARTED:
            rec.state, rec.changes = StepState.FAILED, list(row.changes)
            rec.error, rec.hint = row.error, row.hint
            self._journal(Event.STEP_FAILED, step=step.id, error=row.error, hint=row.hint,
                          changes=rec.changes)
        self.observe("step-finished", step=step.id, status=row.status.value,
                     seconds=row.seconds, detail=row.error)

    def _end_refused(self, exc: BaseException | None) -> None:
        self.report.outcome = Outcome.REFUSED
        if isinstance(exc, KeyboardInterrupt):
            code = ExitCode.INTERRUPTED
        elif not isinstance(exc, OrchestratorError):
            code = ExitCode.INTERNAL
        elif exc.exit_code in (ExitCode.BAD_INPUT, ExitCode.JOURNAL_OPEN):
            code = exc.exit_code
        else:
            code = ExitCode.REFUSED
        self.report.exit_code = code

    def _refuse(self, exc: OrchestratorError) -> RunReport:
        self.report.error, self.report.hint = exc.message, exc.hint
        self._end_refused(exc)
        return self._finish()

    # -- undo ---------------------------------------------------------------------------
    def _rollback(self) -> None:
        self.undoing = True
        incomplete = False
        for step in reversed([s for s in self.steps if self.ctx.records[s.id].needs_undo]):
            try:
                incomplete |= not self._undo_one(step, self.ctx.records[step.id])
            except KeyboardInterrupt:
                self.report.manual.append(f"the rollback was interrupted at {step.id}")
                incomplete = True
                break
        self._finish_rollback(incomplete=incomplete)

    def _finish_rollback(self, *, incomplete: bool) -> RunReport:
        if not incomplete and self.proof is not None and not self.dry:
            incomplete = not self._prove()
        if incomplete:
            self.report.outcome = Outcome.ROLLBACK_INCOMPLETE
            self.report.exit_code = ExitCode.ROLLBACK_INCOMPLETE
            self.report.manual.append(
                f"then run `orchestrator rollback {self.report.plan}` to finish and close the run")
        else:
            self.report.outcome = Outcome.ROLLED_BACK
            self.report.exit_code = ExitCode.ROLLED_BACK
        return self.report

    def _prove(self) -> bool:
        """Run the proof that ends a rollback; False (and the manual steps) when it fails."""
        assert self.proof is not None
        self.observe("step-line", step="rollback", line="proving the old service is back")
        try:
            notes = self.proof.prove(self.host, self.ctx)
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - reported, exit 4
            msg = self._message(exc)
            self.report.manual.append(f"the rollback could not prove the old service back: {msg}")
            self.report.manual.extend(self.proof.manual(self.ctx))
            self.observe("step-line", step="rollback", line=f"proof failed: {msg}")
            return False
        self.report.notes.extend(notes)
        for note in notes:
            self.observe("step-line", step="rollback", line=note)
        return True

    def _message(self, exc: BaseException) -> str:
        """One line for an undo's or the proof's failure (a bug keeps its traceback)."""
        if isinstance(exc, OrchestratorError):
            return exc.message + (f" ({exc.hint})" if exc.hint else "")
        if isinstance(exc, KeyboardInterrupt):
            return "interrupted"
        self.report.trace = "".join(traceback.format_exception(exc))
        return f"internal error: {type(exc).__name__}: {exc}"

    def _undo_one(self, step: Step, rec: StepRecord) -> bool:
        row = self.by_id[step.id]
        self._journal(Event.UNDO_STARTED, step=step.id)
        rec.state = StepState.UNDOING
        self.observe("undo-started", step=step.id)
        mark = len(self.host.changes)
        try:
            text = step.undo(self.host, self.ctx, rec)
        except Exception as exc:  # noqa: BLE001 - keep undoing the others
            msg = self._message(exc)
            rec.state, rec.undo_error = StepState.UNDO_FAILED, msg
            self._journal(Event.UNDO_FAILED, step=step.id, error=msg)
            row.status, row.undo = StepStatus.UNDO_FAILED, msg
            row.changes += self.host.changes.texts(mark)
            self.report.manual.append(f"{step.id}: {self._call(lambda: step.manual_undo(self.ctx, rec))}")
            self.observe("undo-finished", step=step.id, ok=False, detail=msg)
            return False
        rec.state = StepState.UNDONE
        self._journal(Event.UNDO_DONE, step=step.id, detail=text)
        if row.status != StepStatus.FAILED:
            row.status = StepStatus.UNDONE
        row.undo = text or "nothing to undo"
        row.changes += self.host.changes.texts(mark)
        self.observe("undo-finished", step=step.id, ok=True, detail=row.undo)
        return True

    # -- helpers ------------------------------------------------------------------------
    def _finish(self) -> RunReport:
        r = self.report
        r.seconds = self.host.clock.now() - self.t0
        r.changes = self.host.changes.texts()
        for row in r.steps:
            row.facts = self.ctx.records[row.id].facts
        if r.outcome == Outcome.DONE and self.dry:
            r.outcome = Outcome.PLANNED
        r.downtime = downtime(r.steps)
        still_open = r.outcome == Outcome.REFUSED and self.mode != "run" and any(
            rec.needs_undo for rec in self.ctx.records.values())
        if not still_open:  # a refused resume leaves the earlier run open, as it was
            done = RunOutcome.DONE.value if r.outcome == Outcome.PLANNED else r.outcome.value
            self._journal(Event.RUN_FINISHED, outcome=RunOutcome(done).value,
                          exit_code=int(r.exit_code), message=r.error)
        return r

    def _journal(self, event: Event, **fields: object) -> None:
        """Record an event. Going forwards, a journal that cannot be written stops the run
        (JournalWriteError rolls back); while undoing, the undo goes on and the report says
        the journal is behind."""
        try:
            self.journal.append(event, **fields)
        except JournalWriteError as exc:
            if not self.undoing:
                raise
            note = f"the journal is incomplete ({exc.message}): check the state by hand"
            if note not in self.report.manual:
                self.report.manual.append(note)

    def _progress(self, step_id: str, line: str) -> None:
        self.observe("step-line", step=step_id, line=line)

    def _persist(self, step_id: str, data: dict) -> None:
        rec = self.ctx.records[step_id]
        first = not rec.progress
        rec.progress.update(data)
        self._journal(Event.STEP_PROGRESS, step=step_id, data=data)
        if first:
            _crash_point(step_id, "during")

    def _match(self, history: RunHistory) -> None:
        ids = [s.id for s in self.steps]
        if list(history.steps) != ids or (history.plan_sha256 and self.plan_sha256
                                          and history.plan_sha256 != self.plan_sha256):
            raise InputError(f"the plan {self.report.plan} is not the one the open run used "
                             f"({history.plan})",
                             hint="resume with the same plan file, unchanged; or use rollback")

    @staticmethod
    def _call(fn: Callable[[], str | None]) -> str | None:
        try:
            return fn()
        except OrchestratorError as exc:
            return exc.message


def _crash_point(step_id: str, where: str) -> None:
    """Tests only: die like kill -9 at `<step-id>:<where>` when the variable names it."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == f"{step_id}:{where}":
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["Engine", "Outcome", "Proof", "RunContext", "RunReport", "Step", "StepReport",
           "StepStatus", "CRASH_ENV"]
