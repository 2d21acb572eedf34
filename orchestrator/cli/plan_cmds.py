"""`validate` and `schema`: check a plan (and the Orthanc config it names); print the schema."""

from __future__ import annotations

import json
import os
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
    click.echo(_to_json(result) if as_json else render(result))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the schema is JSON.")
def schema(as_json: bool) -> None:
    """Print the plan's JSON Schema."""
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


def summarize(plan: Any, config: Any, note: str | None) -> dict[str, Any]:
    """The facts `validate` reports, as data (the --json document)."""
    svc = plan.service
    url = svc.url or _attr(config, "local_url")
    return {
        "ok": True,
        "plan": str(plan.source),
        "version": plan.version,
        "state_dir": plan.state_dir,
        "service": {
            "name": svc.name, "manager": str(svc.manager), "binary": svc.binary,
            "config": svc.config, "user": svc.user, "url": url,
            "url_from": "plan" if svc.url else ("config HttpPort" if url else None),
            "credentials": _credentials(svc.credentials),
        },
        "config": _config_facts(config) if config is not None else None,
        "steps": [{"index": s.index, "kind": s.kind, "line": s.line, "options": s.options}
                  for s in plan.steps],
        "notes": [n for n in [note] if n],
        "warnings": _warnings(plan, config),
    }


def _credentials(cred: Any) -> dict[str, Any] | None:
    if cred is None:
        return None
    source = ("env " + cred.password_env if cred.password_env else
              f"file {cred.password_file}" if cred.password_file else "netrc")
    return {"username": cred.username, "password_from": source}


def _attr(obj: Any, name: str) -> Any:
    return getattr(obj, name, None) if obj is not None else None


def _config_facts(config: Any) -> dict[str, Any]:
    """The loaded Orthanc config's facts, as its reader reports them (never passwords)."""
    facts = config.to_dict()
    facts.pop("warnings", None)  # reported with the plan's warnings
    return facts


def _warnings(plan: Any, config: Any) -> list[str]:
    """Things that may be fine where the plan runs, but not here."""
    out = [f"config: {w}" for w in (_attr(config, "warnings") or [])]
    svc = plan.service
    if str(svc.manager) != "windows" and not os.access(svc.binary, os.X_OK):
        out.append(f"service.binary {svc.binary} is not an executable file on this host "
                   "(fine if an earlier step installs it)")
    cred = svc.credentials
    if cred and cred.password_env and cred.password_env not in os.environ:
        out.append(f"credentials: environment variable {cred.password_env} is not set here")
    if cred and cred.password_file and not cred.password_file.is_file():
        out.append(f"credentials: password file {cred.password_file} does not exist here")
    return out


def render(result: dict[str, Any]) -> str:
    """The human form of `summarize`."""
    from orchestrator.report import table

    svc = result["service"]
    lines = [f"{result['plan']}: OK (plan version {result['version']}, "
             f"{len(result['steps'])} steps)",
             f"service  {svc['name']} via {svc['manager']}, binary {svc['binary']}",
             f"config   {svc['config']}" + _config_line(result["config"]),
             f"url      {svc['url'] or '(from the config HttpPort)'}"
             + (f"  [{svc['url_from']}]" if svc["url_from"] else "")]
    if svc["credentials"]:
        c = svc["credentials"]
        lines.append(f"auth     user {c['username'] or '(from the URL/netrc)'}, "
                     f"password from {c['password_from']}")
    rows = [(f"{s['index'] + 1}.", s["kind"], _options(s["options"])) for s in result["steps"]]
    lines.append("steps")
    lines.extend("  " + row for row in table(rows).splitlines())
    lines.extend(f"note: {n}" for n in result["notes"])
    lines.extend(f"warning: {w}" for w in result["warnings"])
    return "\n".join(lines)


def _config_line(facts: dict[str, Any] | None) -> str:
    if facts is None:
        return "  (not checked)"
    labels = {"http_port": "HttpPort", "storage_dir": "storage", "index_dir": "index",
              "index_backend": "index backend"}
    parts = [f"{label} {facts[key]}" for key, label in labels.items() if key in facts]
    return ": " + ", ".join(parts) if parts else ": loaded"


def _options(options: dict[str, Any]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, list):
            value = " ".join(map(str, value)) if key in ("argv", "undo") else ",".join(map(str, value))
            value = f"[{value}]"
        elif isinstance(value, dict):
            value = "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return "  ".join(parts)


def _to_json(data: Any) -> str:
    from orchestrator.report import to_json

    return to_json(data)
