"""`plan`, `run`, `status`, `rollback`, `resume`: the upgrade commands.

Each one loads the plan, wires it to this machine, calls the engine, renders
the report and exits with its code. `run`, `rollback` and `resume` hold the
service's run lock; `run` refuses (exit 5) while the last run's journal is open.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

PLAN_ARG = click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
STATE_OPT = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                         help="Journal and lock folder (default: the plan's state_dir, "
                              "$ORCHESTRATOR_STATE_DIR, or /var/lib/orchestrator).")
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
def plan(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Dry-run a plan: every step and the exact changes; changes nothing."""
    from orchestrator.plan import load_plan

    run = _open(load_plan(plan_path), dry=True, state_dir=state_dir, check=True)
    engine = _engine(run, "plan")
    note = _open_journal_note(run)
    report = engine.execute()
    if note:
        report.notes.append(note)
    _emit(report, as_json)


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
def run(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Run a plan; on failure roll back automatically."""
    from orchestrator.errors import JournalOpenError
    from orchestrator.journal import RunLock
    from orchestrator.plan import load_plan
    from orchestrator.wiring import journal_for, state_dir_for

    plan_ = load_plan(plan_path)
    state = state_dir_for(plan_, state_dir)
    # Lock, then look at the journal, before reading anything a crashed run may have changed.
    with _Locked(RunLock.for_service(state, plan_.service.name), "run") as lock:
        history = journal_for(state, plan_.service.name).last_run()
        if history is not None and history.open:
            raise JournalOpenError(
                f"the last run {history.run_id} of {plan_.service.name} is unfinished "
                f"(journal in {state})",
                hint=f"see `orchestrator status {plan_path}`, then `orchestrator rollback "
                     f"{plan_path}` (or `resume`)")
        r = _open(plan_, dry=False, state_dir=state_dir, check=True)
        engine = _engine(r, "run")
        engine.report.notes.extend(lock.notes)
        _emit(engine.execute(), as_json)


@click.command()
@click.argument("plan_path", metavar="[PLAN]", required=False, type=click.Path(path_type=Path))
@STATE_OPT
@JSON_OPT
def status(plan_path: Path | None, state_dir: Path | None, as_json: bool) -> None:
    """Explain the last run from its journal."""
    from orchestrator.journal import read_lock_owner
    from orchestrator.report import to_json
    from orchestrator.report.run import render_history

    journal, where = _journal_to_show(plan_path, state_dir)
    history = journal.last_run() if journal else None
    if history is None:
        click.echo(to_json({"ok": True, "run": None, "journal": str(where)}) if as_json
                   else f"no run recorded in {where}")
        return
    owner = read_lock_owner(journal.path.with_suffix(".lock"))
    if as_json:
        click.echo(to_json({"ok": not history.open, "journal": str(journal.path),
                            "running": owner.__dict__ if owner else None,
                            "run": history.to_dict()}))
    else:
        click.echo(render_history(history, lock_owner=owner,
                                  plan_hint=str(plan_path) if plan_path else None))
    if history.open and owner is None:
        raise SystemExit(5)


def _journal_to_show(plan_path: Path | None, state_dir: Path | None) -> tuple[Any, Path]:
    """The plan's service journal, else the most recently written one in the state folder."""
    from orchestrator.journal import Journal
    from orchestrator.wiring import journal_for, state_dir_for

    if plan_path is not None:
        from orchestrator.plan import load_plan

        p = load_plan(plan_path)
        journal = journal_for(state_dir_for(p, state_dir), p.service.name)
        return journal, journal.path
    state = state_dir_for(None, state_dir)
    found = sorted(state.glob("*.journal"), key=lambda f: f.stat().st_mtime) if state.is_dir() else []
    return (Journal(found[-1]), found[-1]) if found else (None, state)


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
def rollback(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Finish an interrupted run backwards: old state, old service healthy."""
    _continue(plan_path, state_dir, as_json, "rollback")


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
def resume(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Continue an interrupted run forwards where each done step can be verified."""
    _continue(plan_path, state_dir, as_json, "resume")


# -- wiring --------------------------------------------------------------------------

def _open(plan_: Any, *, dry: bool, state_dir: Path | None, check: bool = False,
          **kwargs: Any) -> Any:
    """Wire the plan; `check` also cross-checks it against the Orthanc config (not for
    rollback and resume: a crashed run may have pointed the config at its new folder)."""
    from orchestrator.orthanc.config import load_config
    from orchestrator.plan import check_against_config
    from orchestrator.wiring import open_run

    if check:
        check_against_config(plan_, load_config(plan_.service.config))
    return open_run(plan_, dry=dry, state_dir=state_dir, **kwargs)


def _engine(run: Any, mode: str) -> Any:
    from orchestrator.engine import Engine
    from orchestrator.report.run import Progress

    engine = Engine(run.steps, run.host, run.journal, run.ctx, mode=mode,
                    plan_sha256=run.plan_sha256, observe=Progress())
    if run.manager_note:
        engine.report.notes.append(run.manager_note)
    return engine


def _continue(plan_path: Path, state_dir: Path | None, as_json: bool, mode: str) -> None:
    from orchestrator.journal import RunLock
    from orchestrator.plan import load_plan
    from orchestrator.steps import from_journal
    from orchestrator.wiring import journal_for, state_dir_for

    plan_ = load_plan(plan_path)
    state = state_dir_for(plan_, state_dir)
    with _Locked(RunLock.for_service(state, plan_.service.name), mode) as lock:
        history = journal_for(state, plan_.service.name).last_run()
        if history is None or not history.open:
            what = "no run recorded" if history is None else \
                f"the last run {history.run_id} is closed ({history.outcome.value})"
            if as_json:
                from orchestrator.report import to_json

                click.echo(to_json({"ok": True, "mode": mode, "message": f"{what}: nothing to {mode}"}))
            else:
                click.echo(f"{what}: nothing to {mode}")
            return
        r = _open(plan_, dry=False, state_dir=state_dir, run_id=history.run_id,
                  records=history.steps)
        if mode == "rollback" and history.specs:
            r.steps = from_journal(history.specs)  # undo what ran, whatever the plan says now
        engine = _engine(r, mode)
        engine.report.notes.extend(lock.notes)
        report = engine.rollback(history) if mode == "rollback" else engine.resume(history)
        _emit(report, as_json)


class _Locked:
    """Hold a service's run lock; turn SIGTERM/SIGHUP into an interrupt (which rolls back)."""

    def __init__(self, lock: Any, command: str):
        self.lock, self.command = lock, command
        self.notes: list[str] = []

    def __enter__(self) -> _Locked:
        self.lock.acquire(self.command)
        stale = self.lock.stale_message()
        if stale:
            self.notes.append(stale)
            click.echo(f"orchestrator: {stale}", err=True)
        self.previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.lock.release()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _open_journal_note(run: Any) -> str | None:
    """For `plan`: say when the journal on disk would make `run` refuse."""
    from orchestrator.errors import OrchestratorError
    from orchestrator.wiring import journal_for

    try:
        history = journal_for(run.state_dir, run.plan.service.name).last_run()
    except OrchestratorError as exc:
        return f"the journal cannot be read: {exc.message}"
    if history is None or not history.open:
        return None
    return (f"the last run {history.run_id} is unfinished: `run` refuses (exit 5) until it is "
            "rolled back or resumed")


def _emit(report: Any, as_json: bool) -> None:
    from orchestrator.report import to_json
    from orchestrator.report.run import render_report

    if as_json:
        click.echo(to_json(report.to_dict()))
    else:
        click.echo(render_report(report))
        if report.trace:
            click.echo(report.trace, err=True)
    sys.exit(int(report.exit_code))
