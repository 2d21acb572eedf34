"""The upgrade use cases as plain functions: `preview`, `run`, `resume`, `rollback`, `status`.

Each takes a loaded `Plan` and returns a result with `to_dict()` and `exit_code`;
none prints or exits, so the CLI, a fleet driver and the tests call the same
code. `run`, `resume` and `rollback` hold the service's run lock from the first
read of its journal to the end, and while they hold it SIGTERM and SIGHUP (where
the platform has them) become an interrupt, which rolls back like Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.engine import Engine, RunReport
from orchestrator.run_report import iso_utc
from orchestrator.errors import ExitCode, JournalOpenError, OrchestratorError
from orchestrator.host.runner import Runner
from orchestrator.journal import Journal, RunHistory
from orchestrator.lock import LockOwner, read_lock_owner
from orchestrator.orthanc.config import load_config
from orchestrator.plan import Plan, check_against_config
from orchestrator.steps.base import Host, RunContext
from orchestrator.steps.recovery import manual_restore, prove_restored
from orchestrator.holding import Notify, locked
from orchestrator.wiring import WiredRun, journal_for, open_run, state_dir_for

Observer = Callable[..., None]  # engine events: observe(event, **data)


@dataclass(frozen=True)
class NothingToDo:
    """`resume` or `rollback` found no unfinished run: nothing was touched."""

    mode: str
    message: str
    exit_code: ExitCode = ExitCode.OK

    def to_dict(self) -> dict:
        return {"ok": True, "exit_code": int(self.exit_code), "command": self.mode,
                "mode": self.mode, "outcome": "nothing-to-do", "message": self.message}


@dataclass(frozen=True)
class RunStatus:
    """The last run recorded in a journal, and who holds the run lock right now."""

    where: Path  # the journal read, or the state folder where none was found
    history: RunHistory | None
    lock_owner: LockOwner | None = None
    plan: Path | None = None  # the plan it was asked for, if any

    @property
    def exit_code(self) -> ExitCode:
        """5 when the last run is unfinished and nobody is running it; else 0."""
        if self.history is not None and self.history.open and self.lock_owner is None:
            return ExitCode.JOURNAL_OPEN
        return ExitCode.OK

    def to_dict(self) -> dict:
        """The `status --json` document: times as every document writes them (docs/json.md),
        absolute ones as ISO 8601 UTC strings, and each step's `start` and `seconds` relative
        to the run's start, as in a run report's steps."""
        running = None
        if self.lock_owner is not None:
            running = {**self.lock_owner.__dict__, "started": iso_utc(self.lock_owner.started)}
        return {"ok": self.history is None or not self.history.open,
                "exit_code": int(self.exit_code), "command": "status",
                "journal": str(self.where), "running": running,
                "run": _run_document(self.history) if self.history is not None else None}


def _run_document(history: RunHistory) -> dict:
    run = history.to_dict()
    run.update(started=iso_utc(history.started), finished=iso_utc(history.finished))
    for step, record in zip(run["steps"], history.steps.values()):
        begun, ended = record.started, record.finished
        step.update(started=iso_utc(begun), finished=iso_utc(ended),
                    start=None if begun is None else round(begun - history.started, 3),
                    seconds=None if begun is None or ended is None else round(ended - begun, 3))
    return run


def preview(plan: Plan, *, state_dir: Path | None = None,
            observe: Observer | None = None) -> RunReport:
    """Dry-run `plan`: check it against its Orthanc config, then describe every step and the
    exact changes it would make. Reads the machine, changes nothing, takes no lock.

    plan: the loaded plan.
    state_dir: the journal folder (default: the plan's `state_dir`, `$ORCHESTRATOR_STATE_DIR`,
        /var/lib/orchestrator); read only to say whether `run` would refuse (exit 5).
    observe: called with the engine's step events, for live progress.
    """
    check_against_config(plan, load_config(plan.service.config))
    wired = open_run(plan, dry=True, state_dir=state_dir)
    engine = _engine(wired, "plan", observe)
    note = _open_journal_note(wired)
    report = engine.execute()
    if note:
        report.notes.append(note)
    return report


def run(plan: Plan, *, state_dir: Path | None = None, observe: Observer | None = None,
        notify: Notify | None = None, runner: Runner | None = None,
        manager_options: dict | None = None) -> RunReport:
    """Run `plan` under the service's run lock; on any failure roll back automatically.

    Refuses (JournalOpenError, exit 5) while another run holds the lock or the last run's
    journal is unfinished: `status`, then `rollback` or `resume` first.

    plan: the loaded plan.
    state_dir: the journal and lock folder (default as for `preview`).
    observe: called with the engine's step events, for live progress.
    notify: called at once with messages the operator should see (a recovered stale lock).
    runner, manager_options: for embedding and tests (a fake runner, a SysV `script`).
    """
    state = state_dir_for(plan, state_dir)
    with locked(plan, state, "run", notify) as held:
        history = journal_for(state, plan.service.name).last_run()
        if history is not None and history.open:
            raise JournalOpenError(
                f"the last run {history.run_id} of {plan.service.name} is unfinished "
                f"(journal in {state})",
                hint=f"see `orchestrator status {plan.source}`, then `orchestrator rollback "
                     f"{plan.source}` (or `resume`)")
        check_against_config(plan, load_config(plan.service.config))
        wired = open_run(plan, dry=False, state_dir=state, runner=runner,
                         manager_options=manager_options)
        held.engine = engine = _engine(wired, "run", observe)
        engine.report.notes.extend(held.notes)
        return engine.execute()


def resume(plan: Plan, *, state_dir: Path | None = None, observe: Observer | None = None,
           notify: Notify | None = None) -> RunReport | NothingToDo:
    """Continue the service's interrupted run forwards, where every done step still holds.

    Parameters as for `run`. Returns NothingToDo when the last run is finished (or none).
    """
    return _continue(plan, "resume", state_dir, observe, notify)


def rollback(plan: Plan, *, state_dir: Path | None = None, observe: Observer | None = None,
             notify: Notify | None = None) -> RunReport | NothingToDo:
    """Finish the service's interrupted run backwards: undo, newest first, every step it
    touched, as the journal recorded them (whatever the plan file says now).

    Parameters as for `run`. Returns NothingToDo when the last run is finished (or none).
    """
    return _continue(plan, "rollback", state_dir, observe, notify)


def status(plan: Plan | None = None, *, state_dir: Path | None = None) -> RunStatus:
    """The last run of the plan's service, from its journal; reads only, takes no lock.

    plan: the plan whose service (and `state_dir`) to look at. Without one, the most
        recently written journal of the state folder is shown.
    state_dir: the journal folder (default: the plan's `state_dir`,
        `$ORCHESTRATOR_STATE_DIR`, /var/lib/orchestrator).
    """
    if plan is not None:
        journal = journal_for(state_dir_for(plan, state_dir), plan.service.name)
        source: Path | None = Path(plan.source)
    else:
        journal, source = _latest_journal(state_dir_for(None, state_dir)), None
        if journal is None:
            return RunStatus(state_dir_for(None, state_dir), None)
    history = journal.last_run()
    if history is None:
        return RunStatus(journal.path, None, plan=source)
    owner = read_lock_owner(journal.path.with_suffix(".lock"))
    return RunStatus(journal.path, history, owner, source)


# -- the shared parts ----------------------------------------------------------------------

def _continue(plan: Plan, mode: str, state_dir: Path | None, observe: Observer | None,
              notify: Notify | None) -> RunReport | NothingToDo:
    state = state_dir_for(plan, state_dir)
    with locked(plan, state, mode, notify) as held:
        history = journal_for(state, plan.service.name).last_run()
        if history is None or not history.open:
            what = "no run recorded" if history is None else \
                f"the last run {history.run_id} is closed ({history.outcome.value})"
            return NothingToDo(mode, f"{what}: nothing to {mode}")
        # No config cross-check: a crashed run may have pointed the config at its new folder.
        # A rollback undoes what ran, whatever the plan says now.
        wired = open_run(plan, dry=False, state_dir=state, run_id=history.run_id,
                         records=history.steps,
                         specs=history.specs if mode == "rollback" else None)
        held.engine = engine = _engine(wired, mode, observe)
        engine.report.notes.extend(held.notes)
        return engine.rollback(history) if mode == "rollback" else engine.resume(history)


class _Restored:
    """The proof that ends every rollback (steps/recovery.py), as the engine's `Proof`."""

    @staticmethod
    def prove(host: Host, ctx: RunContext) -> list[str]:
        return prove_restored(host, ctx)

    @staticmethod
    def manual(ctx: RunContext) -> list[str]:
        return manual_restore(ctx)


def _engine(wired: WiredRun, mode: str, observe: Observer | None) -> Engine:
    extra = {"observe": observe} if observe is not None else {}
    engine = Engine(wired.steps, wired.host, wired.journal, wired.ctx, mode=mode,
                    plan_sha256=wired.plan_sha256, proof=_Restored(), **extra)
    if wired.manager_note:
        engine.report.notes.append(wired.manager_note)
    return engine


def _open_journal_note(wired: WiredRun) -> str | None:
    """For `preview`: say when the journal on disk would make `run` refuse."""
    try:
        history = journal_for(wired.state_dir, wired.plan.service.name).last_run()
    except OrchestratorError as exc:
        return f"the journal cannot be read: {exc.message}"
    if history is None or not history.open:
        return None
    return (f"the last run {history.run_id} is unfinished: `run` refuses (exit 5) until it is "
            "rolled back or resumed")


def _latest_journal(state: Path) -> Journal | None:
    """The most recently written journal in `state`, if any."""
    found = sorted(state.glob("*.journal"), key=lambda f: f.stat().st_mtime) if state.is_dir() else []
    return Journal(found[-1]) if found else None
