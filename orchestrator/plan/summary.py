"""What `validate` reports of a checked plan: its facts, the Orthanc config's, and what this
host lacks (warnings that may be fine where the plan runs). The --json document, as data."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from orchestrator.plan.model import Plan


def summarize(plan: Plan, config: Any, note: str | None) -> dict[str, Any]:
    """The facts `validate` reports, as data (the --json document)."""
    svc = plan.service
    url = svc.url or _attr(config, "local_url")
    return {
        "ok": True,
        "exit_code": 0,
        "command": "validate",
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
        "steps": [{"id": step_id, "index": s.index, "kind": s.kind, "line": s.line,
                   "options": s.options} for step_id, s in zip(_step_ids(plan), plan.steps)],
        "notes": [n for n in [note] if n],
        "warnings": _warnings(plan, config),
    }


def _step_ids(plan: Plan) -> list[str]:
    """Each step's id as a run report and the journal name it: its kind, numbered `kind-N`
    (from 1) when the kind occurs more than once (the rule of steps.build)."""
    totals = Counter(s.kind for s in plan.steps)
    seen: Counter[str] = Counter()
    ids = []
    for s in plan.steps:
        seen[s.kind] += 1
        ids.append(s.kind if totals[s.kind] == 1 else f"{s.kind}-{seen[s.kind]}")
    return ids


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
