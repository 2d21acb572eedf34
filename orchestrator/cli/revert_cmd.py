"""`revert PLAN`: undo the last finished run and carry back what arrived since."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.cli.run_cmds import JSON_OPT, PLAN_ARG, STATE_OPT, _emit, _progress


@click.command()
@PLAN_ARG
@STATE_OPT
@JSON_OPT
@click.option("--dry-run", is_flag=True, help="List every change; change nothing.")
def revert(plan_path: Path, state_dir: Path | None, as_json: bool, dry_run: bool) -> None:
    """Undo the last finished run: old folder, old package, old version; nothing lost."""
    from orchestrator import reverts
    from orchestrator.plan import load_plan

    _emit(reverts.revert(load_plan(plan_path), state_dir=state_dir, dry_run=dry_run,
                         observe=_progress()), as_json)
