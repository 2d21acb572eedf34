"""What every step shares: the base class with safe defaults, and the run's facts.

Steps talk to each other only through the journaled records in the run
context (an intent before a step acts, facts after it), so the same lookups
work in a live run and when `rollback` or `resume` rebuilds a crashed run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.journal import StepRecord, StepState


@dataclass
class RunContext:
    """What steps share during a run: the plan, the run's folder and every step's record."""

    plan: Any
    run_id: str
    run_dir: Path
    records: dict[str, StepRecord]
    # What one step hands the next within this process (an optimisation only: after a
    # crash it is empty, and the reader must fall back to facts it can re-read).
    cache: dict = field(default_factory=dict)
    progress: Callable[[str, str], None] = lambda step_id, line: None
    persist: Callable[[str, dict], None] = lambda step_id, data: None


class StepBase:
    """A step that changes nothing; subclasses override what they need."""

    kind = "step"

    def __init__(self, step_id: str, options: dict | None = None, *, index: int = 0,
                 line: int | None = None):
        self.id = step_id
        self.options = dict(options or {})
        self.index = index  # position in the plan's steps
        self.line = line

    def describe(self) -> str:
        return self.kind

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        return []

    def intend(self, host: Any, ctx: RunContext) -> dict:
        return {}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        return {}

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        return {}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        return "nothing to undo"

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return "nothing to do by hand"


# -- the run's facts, as earlier steps recorded them -----------------------------------

def latest(ctx: RunContext, kind: str) -> StepRecord | None:
    """The most recent step of `kind` that started and is not undone."""
    found = None
    for rec in ctx.records.values():
        if rec.kind == kind and rec.state not in (StepState.PENDING, StepState.UNDONE):
            found = rec
    return found


def done_after(ctx: RunContext, record: StepRecord, kind: str) -> bool:
    """True when a step of `kind` after `record` in the plan is done."""
    ids = list(ctx.records)
    later = ids[ids.index(record.id) + 1:]
    return any(ctx.records[i].kind == kind and ctx.records[i].state == StepState.DONE for i in later)


def preflight_facts(ctx: RunContext) -> dict:
    rec = latest(ctx, "preflight")
    return rec.facts if rec is not None else {}


def service_config(ctx: RunContext) -> Any:
    """The Orthanc configuration as it is on disk now."""
    from orchestrator.orthanc.config import load_config

    return load_config(ctx.plan.service.config)


def upgrade_index_dir(ctx: RunContext) -> Path:
    """Where the index the upgrade works on lives: the relocation's target, else the config's."""
    rec = latest(ctx, "relocate")
    if rec is not None and rec.intent.get("to"):
        return Path(rec.intent["to"])
    return Path(service_config(ctx).index_dir)


def counts_text(counts: dict | None) -> str:
    if not counts:
        return "unknown"
    return ", ".join(f"{counts.get(k, '?')} {k}" for k in ("patients", "studies", "series", "instances"))
