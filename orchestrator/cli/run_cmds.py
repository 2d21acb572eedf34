"""`plan`, `run`, `status`, `rollback`, `resume`: the upgrade commands.

Each one parses its arguments, loads the plan, calls its use case in
`orchestrator.runs`, renders the result and exits with its code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

PLAN_ARG = click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
STATE_OPT = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                         help="Journal and lock folder (default: the plan's state_dir, "
                              "$ORCHESTRATOR_STATE_DIR, or /var/lib/orchestrator).")
JSON_OPT = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def OUTPUT_OPTS(fn: Any) -> Any:  # noqa: N802 - a decorator, named like the options above
    from orchestrator.cli import QUIET_OPT, VERBOSE_OPT

    return QUIET_OPT(VERBOSE_OPT(fn))


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
@OUTPUT_OPTS
def plan(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Dry-run a plan: every step and the exact changes; changes nothing."""
    from orchestrator import runs
    from orchestrator.plan import load_plan

    _emit(runs.preview(load_plan(plan_path), state_dir=state_dir, observe=_progress()), as_json)


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
@OUTPUT_OPTS
def run(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Run a plan; on failure roll back automatically."""
    from orchestrator import runs
    from orchestrator.plan import load_plan

    _emit(runs.run(load_plan(plan_path), state_dir=state_dir, observe=_progress(),
                   notify=_notify), as_json)


@click.command()
@click.argument("plan_path", metavar="[PLAN]", required=False, type=click.Path(path_type=Path))
@click.option("--plan", "plan_opt", metavar="PLAN", type=click.Path(path_type=Path), default=None,
              help="The plan whose service (and state_dir) to show; same as the PLAN argument.")
@STATE_OPT
@JSON_OPT
def status(plan_path: Path | None, plan_opt: Path | None, state_dir: Path | None,
           as_json: bool) -> None:
    """Explain the last run from its journal (the plan's state_dir when given a plan)."""
    from orchestrator import runs
    from orchestrator.plan import load_plan
    from orchestrator.report.run import render_status

    if plan_path and plan_opt and plan_path != plan_opt:
        raise click.UsageError("give the plan once: as PLAN or as --plan, not two different ones")
    given = plan_path or plan_opt
    result = runs.status(load_plan(given) if given else None, state_dir=state_dir)
    _emit(result, as_json, render_status)


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
@OUTPUT_OPTS
def rollback(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Finish an interrupted run backwards: old state, old service healthy."""
    from orchestrator import runs
    from orchestrator.plan import load_plan

    _emit(runs.rollback(load_plan(plan_path), state_dir=state_dir, observe=_progress(),
                        notify=_notify), as_json)


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
@OUTPUT_OPTS
def resume(plan_path: Path, state_dir: Path | None, as_json: bool) -> None:
    """Continue an interrupted run forwards where each done step can be verified."""
    from orchestrator import runs
    from orchestrator.plan import load_plan

    _emit(runs.resume(load_plan(plan_path), state_dir=state_dir, observe=_progress(),
                      notify=_notify), as_json)


# -- rendering -------------------------------------------------------------------------

def _progress() -> Any:
    from orchestrator.progress import StepProgress

    return StepProgress()


def _notify(message: str) -> None:
    from orchestrator.progress import fit

    click.echo(fit(f"orchestrator: {message}", sys.stderr), err=True)


def _emit(result: Any, as_json: bool, render: Any = None) -> None:
    """Print `result` (as JSON, or rendered) and exit with its code."""
    from orchestrator.report import to_json
    from orchestrator.report.run import render_report
    from orchestrator.runs import NothingToDo

    from orchestrator.progress import fit

    if as_json:
        click.echo(to_json(result.to_dict()))
    elif render is not None:
        click.echo(fit(render(result), sys.stdout))
    elif isinstance(result, NothingToDo):
        click.echo(fit(result.message, sys.stdout))
    else:
        click.echo(fit(render_report(result), sys.stdout))
    if getattr(result, "trace", None):  # a bug's traceback, with --json too
        click.echo(fit(result.trace, sys.stderr), err=True)
    sys.exit(int(result.exit_code))
