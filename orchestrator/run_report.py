"""What an engine call reports: each step's row, the run's outcome, exit code and downtime.

The report owns its JSON form (`--json`) and the downtime rule; the engine
only fills it in. It imports nothing of the package but `errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from orchestrator.errors import ExitCode


class Outcome(str, Enum):
    """How an engine call ended."""

    DONE = "done"
    PLANNED = "planned"  # dry run, nothing blocking
    REFUSED = "refused"  # failed before changing anything
    ROLLED_BACK = "rolled-back"
    ROLLBACK_INCOMPLETE = "rollback-incomplete"


class StepStatus(str, Enum):
    """What happened to one step in this call (shown in the step table)."""

    DONE = "done"
    WOULD = "would do"  # dry run
    VERIFIED = "verified"  # resume: done earlier, and its effect still holds
    FAILED = "failed"
    UNDONE = "undone"
    UNDO_FAILED = "undo failed"
    NOT_RUN = "not run"


class Downtime(str, Enum):
    """A step's part in the service's downtime (declared by the step class)."""

    BEGINS = "begins"  # the service goes down at this step's start (stop-service)
    ENDS = "ends"  # the service is back once this step ends (start-service, health-check)


FINISHED = (StepStatus.DONE, StepStatus.WOULD)


@dataclass
class StepReport:
    id: str
    kind: str
    description: str
    status: StepStatus = StepStatus.NOT_RUN
    start: float | None = None  # seconds since the call began
    seconds: float | None = None
    detail: str = ""
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    undo: str | None = None  # what the undo did, or why it failed
    facts: dict = field(default_factory=dict)  # what the step found or did (JSON only)
    notes: list[str] = field(default_factory=list)  # what the service manager had to do
    downtime: Downtime | None = None

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "description": self.description,
                "status": self.status.value, "start": _r(self.start), "seconds": _r(self.seconds),
                "detail": self.detail, "changes": self.changes, "error": self.error,
                "hint": self.hint, "undo": self.undo, "facts": self.facts, "notes": self.notes}


@dataclass
class RunReport:
    mode: str  # plan | run | rollback | resume
    run_id: str
    plan: str
    service: str
    steps: list[StepReport]
    outcome: Outcome = Outcome.DONE
    exit_code: ExitCode = ExitCode.OK
    error: str | None = None
    hint: str | None = None
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)  # exit 4: what the operator must do
    seconds: float = 0.0
    downtime: float | None = None  # service stopped -> proven healthy again
    trace: str | None = None  # a bug's traceback

    def to_dict(self) -> dict:
        return {"ok": self.exit_code == ExitCode.OK, "exit_code": int(self.exit_code),
                "command": self.mode, "mode": self.mode, "run_id": self.run_id,
                "plan": self.plan, "service": self.service, "outcome": self.outcome.value,
                "error": self.error, "hint": self.hint,
                "seconds": _r(self.seconds), "downtime": _r(self.downtime),
                "steps": [s.to_dict() for s in self.steps], "changes": self.changes,
                "warnings": self.warnings, "notes": self.notes, "manual": self.manual}


def downtime(steps: list[StepReport]) -> float | None:
    """Seconds from the start of the first finished step that takes the service down to the
    end of the last finished step that brings it back."""
    stop = next((s for s in steps if s.downtime == Downtime.BEGINS and s.start is not None
                 and s.status in FINISHED), None)
    if stop is None or stop.start is None:
        return None
    ends = [s for s in steps if s.downtime == Downtime.ENDS and s.status in FINISHED
            and s.start is not None and s.seconds is not None]
    if not ends:
        return None
    last = ends[-1]
    return last.start + last.seconds - stop.start  # type: ignore[operator]


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def iso_utc(epoch: float | None) -> str | None:
    """An absolute time as every --json document writes it: ISO 8601 in UTC, milliseconds,
    e.g. "2026-11-28T09:59:12.123Z" (docs/json.md)."""
    if epoch is None:
        return None
    stamp = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def step_detail(summary: str, notes: tuple[str, ...]) -> str:
    """A step's one-line detail: its summary, then what the service manager had to do."""
    return "; ".join([summary, *notes] if summary else notes)


def plan_path(plan: object) -> str:
    source = getattr(plan, "source", None)
    return str(Path(source).absolute()) if source is not None else "?"
