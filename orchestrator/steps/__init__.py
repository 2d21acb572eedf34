"""The plan's steps: one module per kind, mapped from the YAML's kebab-case kinds in one table.

`build(plan)` turns a plan into the ordered list the engine runs, with stable
ids (the kind, or `kind-N` when a kind repeats) and one addition the plan does
not spell out: before the stop-service that precedes a relocate, a
`stage-links` step links the attachments while the service still runs, so the
downtime does not grow with the size of the archive.
"""

from __future__ import annotations

from collections import Counter
from importlib import import_module
from typing import Any

# kind -> (module, class)
KINDS: dict[str, tuple[str, str]] = {
    "preflight": ("orchestrator.steps.preflight", "Preflight"),
    "stop-service": ("orchestrator.steps.service", "StopService"),
    "snapshot": ("orchestrator.steps.snapshot", "Snapshot"),
    "stage-links": ("orchestrator.steps.relocate", "StageLinks"),
    "relocate": ("orchestrator.steps.relocate", "Relocate"),
    "upgrade": ("orchestrator.steps.upgrade", "Upgrade"),
    "start-service": ("orchestrator.steps.service", "StartService"),
    "health-check": ("orchestrator.steps.health", "HealthCheck"),
    "command": ("orchestrator.steps.command", "Command"),
}


def step_class(kind: str) -> type:
    module, name = KINDS[kind]
    return getattr(import_module(module), name)


def build(plan: Any) -> list[Any]:
    """The steps to run for `plan`, in order."""
    totals = Counter(spec.kind for spec in plan.steps)
    seen: Counter[str] = Counter()
    steps = []
    for spec in plan.steps:
        seen[spec.kind] += 1
        step_id = spec.kind if totals[spec.kind] == 1 else f"{spec.kind}-{seen[spec.kind]}"
        steps.append(step_class(spec.kind)(step_id, spec.options, index=spec.index, line=spec.line))
    for reloc in [s for s in steps if s.kind == "relocate"]:
        at = reloc_stage_position(steps, reloc)
        if at is not None:
            stage = step_class("stage-links")(f"{reloc.id}-stage", reloc.options,
                                              index=reloc.index, line=reloc.line)
            steps.insert(at, stage)
    return steps


def from_journal(specs: list[dict]) -> list[Any]:
    """The steps of a journaled run (ids, kinds and options as recorded), to undo them even
    when the plan file changed since."""
    return [step_class(spec["kind"])(spec["id"], spec.get("options") or {}, index=i)
            for i, spec in enumerate(specs)]


def reloc_stage_position(steps: list[Any], reloc: Any) -> int | None:
    """Index of the last stop-service before `reloc` (links go in before it), or None."""
    pos = steps.index(reloc)
    stops = [i for i, s in enumerate(steps[:pos]) if s.kind == "stop-service"]
    return stops[-1] if stops else None
