"""What every step shares: the typed step contract, the base class, and the run's context.

A step kind is a class with three record types (record.py): `Options` (from
the plan, defaults here and nowhere else), `Intent` (decided before it acts,
journaled `started`) and `Facts` (what it found or did, journaled `done`).
Steps talk to each other only through the journaled records in the run
context, read back as typed records, so the same lookups work in a live run
and when `rollback` or `resume` rebuilds a crashed run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, Protocol, TypeVar

from orchestrator.host.host import Host
from orchestrator.journal import StepRecord, StepState
from orchestrator.orthanc.config import OrthancConfig, load_config
from orchestrator.run_report import Downtime
from orchestrator.steps.kind import StepKind
from orchestrator.steps.record import Record

__all__ = ["Host", "RunContext", "StepBase", "StepFacts", "StepIntent", "StepOptions", "Needs",
           "Copy", "latest", "done_after", "counts_text"]


# -- what steps see of the plan (the plan package is above the steps) --------------------

class ServiceView(Protocol):
    name: str
    binary: Path
    config: Path
    user: str | None
    install_dir: str | None


class StepSpecView(Protocol):
    kind: str
    options: Mapping[str, object]
    index: int
    line: int | None


class PlanView(Protocol):
    source: Path
    service: ServiceView
    steps: Sequence[StepSpecView]


# -- the records every kind extends ------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StepOptions(Record):
    what: ClassVar[str] = "options"


@dataclass(frozen=True, kw_only=True)
class StepIntent(Record):
    what: ClassVar[str] = "intent"


@dataclass(frozen=True, kw_only=True)
class StepFacts(Record):
    what: ClassVar[str] = "facts"

    summary: str = ""
    notes: tuple[str, ...] = ()  # what the service manager had to do (shown in the report)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Copy:
    """A copy a step will make, for preflight's free-space check."""

    where: Path
    what: str
    sqlite_only: bool = False  # a copy of the index file: none for a database server


@dataclass(frozen=True)
class Needs:
    """What a step tells preflight about itself before anything runs."""

    copies: tuple[Copy, ...] = ()
    index_source: Path | None = None  # the upgrade works on an index copied from here
    expects_version: str | None = None  # the Orthanc version the step will insist on
    binary_after: str | None = None  # the Orthanc version the step installs (hazards judge it)


# -- the run's context -------------------------------------------------------------------

@dataclass
class RunContext:
    """What steps share during a run: the plan, the run's folder and every step's record."""

    plan: PlanView
    run_id: str
    run_dir: Path
    records: dict[str, StepRecord]
    # What one step hands the next within this process (an optimisation only: after a
    # crash it is empty, and the reader must fall back to facts it can re-read).
    cache: dict[tuple[str, str], object] = field(default_factory=dict)
    progress: Callable[[str, str], None] = lambda step_id, line: None
    persist: Callable[[str, dict], None] = lambda step_id, data: None
    steps: Sequence[StepBase] = ()  # the steps of this run (the engine sets them)
    # The Orthanc configuration as read for this run (wiring may hand in the one it read).
    orthanc_config: OrthancConfig | None = None

    def config(self) -> OrthancConfig:
        """The Orthanc configuration, read once (again after `forget_config`)."""
        if self.orthanc_config is None:
            self.orthanc_config = load_config(self.plan.service.config)
        return self.orthanc_config

    def forget_config(self) -> None:
        """The configuration changed on disk (a relocation): read it again next time."""
        self.orthanc_config = None


O = TypeVar("O", bound=StepOptions)
I = TypeVar("I", bound=StepIntent)  # noqa: E741
F = TypeVar("F", bound=StepFacts)


class StepBase(Generic[O, I, F]):
    """A step that changes nothing; subclasses override what they need."""

    kind: ClassVar[StepKind]
    Options: ClassVar[type[StepOptions]] = StepOptions
    Intent: ClassVar[type[StepIntent]] = StepIntent
    Facts: ClassVar[type[StepFacts]] = StepFacts
    downtime: ClassVar[Downtime | None] = None
    staged_by: ClassVar[StepKind | None] = None  # the kind that pre-stages it before the stop

    def __init__(self, step_id: str, options: O | None = None, *, index: int = 0,
                 line: int | None = None):
        self.id = step_id
        self.options: O = options if options is not None else self.Options()  # type: ignore[assignment]
        self.index = index  # position in the plan's steps
        self.line = line

    def describe(self) -> str:
        return str(self.kind)

    def needs(self, ctx: RunContext) -> Needs:
        """What preflight must know of this step (copies it makes, versions it insists on)."""
        return Needs()

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        return []

    def intend(self, host: Host, ctx: RunContext) -> I:
        return self.Intent()  # type: ignore[return-value]

    def apply(self, host: Host, ctx: RunContext, intent: I) -> F:
        return self.Facts()  # type: ignore[return-value]

    def verify(self, host: Host, ctx: RunContext, intent: I, facts: F) -> F:
        return facts

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        return "nothing to undo"

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return "nothing to do by hand"

    # -- the journal boundary: a record's dicts as this kind's typed data --------------
    def intent_of(self, record: StepRecord) -> I | None:
        """The journaled intent, or None when the step never got that far."""
        where = f"journal: step {record.id}: intent"
        return self.Intent.from_json(record.intent, where=where) if record.intent else None  # type: ignore[return-value]

    def facts_of(self, record: StepRecord) -> F | None:
        """The journaled facts, or None when the step did not finish."""
        where = f"journal: step {record.id}: facts"
        return self.Facts.from_json(record.facts, where=where) if record.facts else None  # type: ignore[return-value]


# -- the run's facts, as earlier steps recorded them -----------------------------------

def latest(ctx: RunContext, kind: StepKind) -> StepRecord | None:
    """The most recent step of `kind` that started and is not undone."""
    found = None
    for rec in ctx.records.values():
        if rec.kind == kind and rec.state not in (StepState.PENDING, StepState.UNDONE):
            found = rec
    return found


def done_after(ctx: RunContext, record: StepRecord, kind: StepKind) -> bool:
    """True when a step of `kind` after `record` in the plan is done."""
    ids = list(ctx.records)
    later = ids[ids.index(record.id) + 1:]
    return any(ctx.records[i].kind == kind and ctx.records[i].state == StepState.DONE for i in later)


def counts_text(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "unknown"
    return ", ".join(f"{counts.get(k, '?')} {k}" for k in ("patients", "studies", "series", "instances"))
