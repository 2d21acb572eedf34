"""`validate` and `schema`: check a plan (and the Orthanc config it names); print the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from orchestrator.errors import ExitCode

CONFIG_MODULE = "orchestrator.orthanc.config"


@click.command()
@click.argument("plan_path", metavar="PLAN", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def validate(plan_path: Path, as_json: bool) -> None:
    """Check a plan and the Orthanc configuration it points at."""
    from orchestrator.plan import PlanError, check_against_config, load_plan
    from orchestrator.plan.summary import summarize
    from orchestrator.report.validation import render_validation

    try:
        plan = load_plan(plan_path)
        config, note = _load_config(plan.service.config)
        if config is not None:
            check_against_config(plan, config)
    except PlanError as exc:
        if not as_json:
            raise
        _fail_json(exc)
    result = summarize(plan, config, note)
    click.echo(_to_json(result) if as_json else render_validation(result))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the schema is JSON.")
@click.option("--output", "output", is_flag=True,
              help="Print the schema of the --json documents instead (docs/json.md).")
def schema(as_json: bool, output: bool) -> None:
    """Print the plan's JSON Schema (or, with --output, that of the --json documents)."""
    if output:
        from importlib import resources

        text = resources.files("orchestrator").joinpath("data/output.schema.json").read_text("utf-8")
        click.echo(json.dumps(json.loads(text), indent=2))
        return
    from orchestrator.plan import plan_schema

    click.echo(json.dumps(plan_schema(), indent=2))


def _fail_json(exc: Any) -> None:
    """Print every problem of a bad plan as one JSON document (the error line and hint go
    to stderr, as for any other error), then exit 2."""
    from orchestrator.plan import format_path

    click.echo(_to_json({
        "ok": False, "exit_code": int(exc.exit_code), "error": exc.message, "hint": exc.hint,
        "problems": [{"line": p.line, "path": format_path(p.path), "message": p.message,
                      "hint": p.hint} for p in exc.problems]}))
    click.echo(f"orchestrator: error: {exc.message}", err=True)
    if exc.hint:
        click.echo(f"  hint: {exc.hint}", err=True)
    raise SystemExit(int(ExitCode.BAD_INPUT))


def _load_config(path: Path) -> tuple[Any, str | None]:
    """Load the Orthanc config with the config reader, if that module exists yet."""
    try:
        from orchestrator.orthanc.config import load_config
    except ModuleNotFoundError as exc:
        if exc.name != CONFIG_MODULE:
            raise
        return None, f"{CONFIG_MODULE} is not available: the Orthanc configuration was not checked"
    return load_config(path), None


def _to_json(data: Any) -> str:
    from orchestrator.report import to_json

    return to_json(data)
