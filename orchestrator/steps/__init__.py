"""The plan's steps: one module per kind, mapped from `StepKind` in one table.

`build(plan)` turns a plan into the ordered list the engine runs, with stable
ids (the kind, or `kind-N` when a kind repeats) and additions the plan does not
spell out: before the stop-service that precedes a snapshot or a relocate, a
stage step pre-copies the index (and, for relocate, links the attachments)
while the service still runs, so the downtime does not grow with the archive.

Adding a step kind: its module (the class with its Options/Intent/Facts), a
member of `StepKind`, a row in `STEPS`, and its schema entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from orchestrator.steps.base import PlanView, StepBase
from orchestrator.steps.bluegreen import CatchUp, Freeze, Replicate, Switch, VerifyCopy
from orchestrator.steps.command import Command
from orchestrator.steps.health import HealthCheck
from orchestrator.steps.kind import StepKind, stage_id
from orchestrator.steps.package import Package, StagePackage
from orchestrator.steps.preflight import Preflight
from orchestrator.steps.record import RecordError
from orchestrator.steps.relocate import Relocate, StageLinks
from orchestrator.steps.service import StartService, StopService
from orchestrator.steps.snapshot import Snapshot, StageSnapshot
from orchestrator.steps.upgrade import Upgrade

# The one table: every kind, its class (and through it its Options, Intent and Facts).
STEPS: dict[StepKind, type[StepBase]] = {
    StepKind.PREFLIGHT: Preflight,
    StepKind.STOP_SERVICE: StopService,
    StepKind.SNAPSHOT: Snapshot,
    StepKind.STAGE_SNAPSHOT: StageSnapshot,
    StepKind.STAGE_LINKS: StageLinks,
    StepKind.RELOCATE: Relocate,
    StepKind.STAGE_PACKAGE: StagePackage,
    StepKind.PACKAGE: Package,
    StepKind.UPGRADE: Upgrade,
    StepKind.START_SERVICE: StartService,
    StepKind.HEALTH_CHECK: HealthCheck,
    StepKind.COMMAND: Command,
    StepKind.REPLICATE: Replicate,
    StepKind.CATCH_UP: CatchUp,
    StepKind.FREEZE: Freeze,
    StepKind.VERIFY_COPY: VerifyCopy,
    StepKind.SWITCH: Switch,
}

__all__ = ["STEPS", "StepKind", "build", "from_journal", "step_class", "stage_position"]


def step_class(kind: str | StepKind) -> type[StepBase]:
    return STEPS[StepKind(kind)]


def make_step(kind: str | StepKind, step_id: str, options: Mapping[str, object] | None, *,
              index: int = 0, line: int | None = None, where: str = "") -> StepBase:
    """A step of `kind` with its options read from JSON (the plan's, or the journal's)."""
    cls = step_class(kind)
    where = where or f"steps[{index}].{kind}" + (f" (line {line})" if line else "")
    return cls(step_id, cls.Options.from_json(options or {}, where=where), index=index, line=line)


def build(plan: PlanView) -> list[StepBase]:
    """The steps to run for `plan`, in order."""
    totals = Counter(spec.kind for spec in plan.steps)
    seen: Counter[str] = Counter()
    steps = []
    for spec in plan.steps:
        seen[spec.kind] += 1
        step_id = spec.kind if totals[spec.kind] == 1 else f"{spec.kind}-{seen[spec.kind]}"
        steps.append(make_step(spec.kind, step_id, spec.options, index=spec.index, line=spec.line))
    # Work that can be done while the service still runs goes before the stop that precedes
    # the step needing it: links and index pre-copies, so the downtime stays short.
    for step in [s for s in steps if s.staged_by is not None]:
        at = stage_position(steps, step)
        if at is not None:
            stage = STEPS[step.staged_by](stage_id(step.id), step.options,  # type: ignore[index]
                                          index=step.index, line=step.line)
            steps.insert(at, stage)
    return steps


def from_journal(specs: Sequence[Mapping[str, object]]) -> list[StepBase]:
    """The steps of a journaled run (ids, kinds and options as recorded), to undo them even
    when the plan file changed since. A kind or options this version cannot read is refused."""
    steps = []
    for i, spec in enumerate(specs):
        kind = spec.get("kind")
        try:
            StepKind(kind)
        except ValueError:
            raise RecordError(f"journal: step {spec.get('id')}: unknown kind {kind!r}",
                              hint="the run was started by another version of orchestrator: "
                                   "finish it with that version") from None
        options = spec.get("options") or {}
        steps.append(make_step(str(kind), str(spec["id"]), options, index=i,  # type: ignore[arg-type]
                               where=f"journal: step {spec.get('id')}: options"))
    return steps


def stage_position(steps: list[StepBase], step: StepBase) -> int | None:
    """Index of the last stop-service before `step` (its stage goes in before it), or None."""
    pos = steps.index(step)
    stops = [i for i, s in enumerate(steps[:pos]) if s.kind == StepKind.STOP_SERVICE]
    return stops[-1] if stops else None
