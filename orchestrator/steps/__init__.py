"""The plan's steps: one module per kind, mapped from the YAML's kebab-case kinds in one table.

`build(plan)` turns a plan into the ordered list the engine runs, with stable
ids (the kind, or `kind-N` when a kind repeats) and additions the plan does not
spell out: before the stop-service that precedes a snapshot or a relocate, a
stage step pre-copies the index (and, for relocate, links the attachments)
while the service still runs, so the downtime does not grow with the archive.
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
    "stage-snapshot": ("orchestrator.steps.snapshot", "StageSnapshot"),
    "stage-links": ("orchestrator.steps.relocate", "StageLinks"),
    "relocate": ("orchestrator.steps.relocate", "Relocate"),
    "upgrade": ("orchestrator.steps.upgrade", "Upgrade"),
    "start-service": ("orchestrator.steps.service", "StartService"),
    "health-check": ("orchestrator.steps.health", "HealthCheck"),
    "command": ("orchestrator.steps.command", "Command"),
}


STAGED = {"snapshot": "stage-snapshot", "relocate": "stage-links"}  # step -> its pre-stage


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
    # Work that can be done while the service still runs goes before the stop that precedes
    # the step needing it: links and index pre-copies, so the downtime stays short.
    for step in [s for s in steps if s.kind in STAGED]:
        at = stage_position(steps, step)
        if at is not None:
            stage = step_class(STAGED[step.kind])(f"{step.id}-stage", step.options,
                                                 index=step.index, line=step.line)
            steps.insert(at, stage)
    return steps


def from_journal(specs: list[dict]) -> list[Any]:
    """The steps of a journaled run (ids, kinds and options as recorded), to undo them even
    when the plan file changed since."""
    return [step_class(spec["kind"])(spec["id"], spec.get("options") or {}, index=i)
            for i, spec in enumerate(specs)]


def stage_position(steps: list[Any], step: Any) -> int | None:
    """Index of the last stop-service before `step` (its stage goes in before it), or None."""
    pos = steps.index(step)
    stops = [i for i, s in enumerate(steps[:pos]) if s.kind == "stop-service"]
    return stops[-1] if stops else None
