"""Normalise a checked plan into the typed `Plan`: the schema's defaults filled in, paths
resolved against the plan file's folder (POSIX or Windows style)."""

from __future__ import annotations

import copy
import os
from pathlib import Path, PureWindowsPath
from typing import Any

from orchestrator.plan.document import line_at
from orchestrator.plan.model import CredentialsSpec, Manager, Plan, ServiceSpec, StepSpec
from orchestrator.plan.problems import KeyPath
from orchestrator.plan.schema import PATH_REF, deref, schema_document, step_branches


def typed_plan(raw: dict, lines: dict[KeyPath, int], source: str, base: Path) -> Plan:
    """Type a plan that passed the schema and the rules; `lines` gives each step its line."""
    top = normalize(raw, schema_document(), base)
    svc = top["service"]
    cred = svc.get("credentials")
    service = ServiceSpec(
        name=svc["name"], manager=Manager(svc["manager"]), binary=svc["binary"],
        config=svc["config"], user=svc.get("user"), url=svc.get("url"),
        credentials=CredentialsSpec(cred.get("username"), cred.get("password_env"),
                                    cred.get("password_file")) if cred else None,
        pidfile=svc.get("pidfile"), log_file=svc.get("log_file"),
        install_dir=svc.get("install_dir"), stop_grace=float(svc["stop_grace"]),
        init_script=svc.get("init_script"), allow_unscoped_stop=bool(svc["allow_unscoped_stop"]))
    keyed = step_branches()[1]["properties"]
    steps = []
    for i, item in enumerate(raw["steps"]):
        kind, options = (item, None) if isinstance(item, str) else next(iter(item.items()))
        options = normalize(options or {}, keyed[kind], base)
        steps.append(StepSpec(kind, options, i, line_at(lines, ("steps", i))))
    return Plan(source=Path(source), version=int(raw["version"]), service=service,
                steps=tuple(steps), state_dir=top.get("state_dir"), raw=raw)


def normalize(value: Any, node: dict, base: Path) -> Any:
    """Copy `value`, filling in the schema's defaults and resolving $defs/path values."""
    if node.get("$ref") == PATH_REF and isinstance(value, str):
        return _resolve_path(value, base)
    node = deref(node)
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for key, sub in node["properties"].items():
            if key not in out:
                default = sub.get("default", deref(sub).get("default"))
                if default is None:
                    continue
                out[key] = copy.deepcopy(default)
            out[key] = normalize(out[key], sub, base)
        return out
    return copy.deepcopy(value)


def _resolve_path(text: str, base: Path) -> Path:
    """An absolute path as given (POSIX or Windows style), else relative to `base`."""
    if PureWindowsPath(text).is_absolute() and not text.startswith("/"):
        return Path(text)  # C:\... or \\host\share: kept as written, for the Windows host
    return Path(os.path.normpath(base / text))  # an absolute `text` replaces `base`

