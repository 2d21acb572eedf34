"""The run journal: append-only JSON lines, one file per service.

Every record is fsynced before the call returns, so after a crash the file
holds a true account of what started and what finished. A torn last line (a
crash in the middle of a write) is cut off before the next append; readers
ignore it. A run is *open* until a `run-finished` record says it ended cleanly
(done, refused, or rolled back completely); `status` reads it, `rollback` and
`resume` finish it.

The journal is opened without following symlinks, in a private folder
(`orchestrator.statefile`); the run lock lives in `orchestrator.lock`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, OrchestratorError
from orchestrator.statefile import WINDOWS, UnsafeStatePathError, open_state_file, safe_name


class JournalWriteError(OrchestratorError):
    """The journal could not be written: the run must not go on without its record."""


class Event(str, Enum):
    """The kinds of journal records (closed set)."""

    RUN_STARTED = "run-started"
    RUN_RESUMED = "run-resumed"  # resume or rollback picks up the same run
    STEP_STARTED = "step-started"
    STEP_PROGRESS = "step-progress"
    STEP_DONE = "step-done"
    STEP_FAILED = "step-failed"
    UNDO_STARTED = "undo-started"
    UNDO_DONE = "undo-done"
    UNDO_FAILED = "undo-failed"
    RUN_FINISHED = "run-finished"


class StepState(str, Enum):
    """Where a step stands according to the journal."""

    PENDING = "pending"  # never started
    STARTED = "started"  # started, neither done nor failed: in flight at a crash
    DONE = "done"
    FAILED = "failed"
    UNDOING = "undoing"  # its undo started and did not finish: in flight at a crash
    UNDONE = "undone"
    UNDO_FAILED = "undo-failed"

    @property
    def touched(self) -> bool:
        """True when the step began and is not undone yet."""
        return self in (StepState.STARTED, StepState.DONE, StepState.FAILED,
                        StepState.UNDOING, StepState.UNDO_FAILED)


class RunOutcome(str, Enum):
    """How a run ended (the `run-finished` record)."""

    DONE = "done"
    REFUSED = "refused"  # failed before changing anything
    ROLLED_BACK = "rolled-back"
    ROLLBACK_INCOMPLETE = "rollback-incomplete"


@dataclass
class StepRecord:
    """One step of a run, as the journal tells it."""

    id: str
    kind: str
    state: StepState = StepState.PENDING
    intent: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    progress: dict = field(default_factory=dict)
    changes: list[str] | None = None  # what it changed; None: unknown (in flight at a crash)
    error: str | None = None
    hint: str | None = None
    undo_error: str | None = None
    started: float | None = None  # wall clock (epoch seconds)
    finished: float | None = None

    @property
    def needs_undo(self) -> bool:
        """True when the step may have changed something that is not undone yet."""
        if self.state in (StepState.UNDOING, StepState.UNDO_FAILED):
            return True
        return self.state.touched and self.changes != []

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state.value,
                "intent": self.intent, "facts": self.facts, "progress": self.progress,
                "changes": self.changes,
                "error": self.error, "hint": self.hint, "undo_error": self.undo_error,
                "started": self.started, "finished": self.finished}


@dataclass
class RunHistory:
    """The last run of a service, rebuilt from its journal records."""

    run_id: str
    plan: str
    plan_sha256: str
    service: str
    pid: int
    host: str
    started: float
    steps: dict[str, StepRecord]
    specs: list[dict] = field(default_factory=list)  # id, kind, options: enough to undo
    mode: str = "run"
    outcome: RunOutcome | None = None
    exit_code: int | None = None
    message: str | None = None
    finished: float | None = None
    torn_tail: bool = False

    @property
    def open(self) -> bool:
        """True while the run needs `rollback` (or `resume`) before another run."""
        return self.outcome is None or self.outcome == RunOutcome.ROLLBACK_INCOMPLETE

    def touched(self) -> list[StepRecord]:
        """Steps whose effect may still be in place, in plan order."""
        return [s for s in self.steps.values() if s.state.touched]

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "plan": self.plan, "plan_sha256": self.plan_sha256,
                "service": self.service, "pid": self.pid, "host": self.host,
                "started": self.started, "finished": self.finished, "mode": self.mode,
                "outcome": self.outcome.value if self.outcome else None,
                "exit_code": self.exit_code, "message": self.message, "open": self.open,
                "steps": [s.to_dict() for s in self.steps.values()]}


_STATE_AFTER = {
    Event.STEP_STARTED: StepState.STARTED,
    Event.STEP_DONE: StepState.DONE,
    Event.STEP_FAILED: StepState.FAILED,
    Event.UNDO_STARTED: StepState.UNDOING,
    Event.UNDO_DONE: StepState.UNDONE,
    Event.UNDO_FAILED: StepState.UNDO_FAILED,
}


def new_run_id() -> str:
    """A sortable, unique run id: the local time and a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Journal:
    """Append-only JSON-lines journal at `path`; each append is fsynced."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def for_service(cls, state_dir: Path, service: str) -> Journal:
        return cls(Path(state_dir) / f"{safe_name(service)}.journal")

    # -- writing ---------------------------------------------------------------
    def append(self, event: Event, **fields: Any) -> dict:
        """Write one record (with the wall time), repairing a torn tail first.

        Raise JournalWriteError when it cannot be written (a full disk, a read-only folder).
        """
        record = {"event": event.value, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, sort_keys=False, default=str, ensure_ascii=True) + "\n"
        try:
            created = not os.path.lexists(self.path)
            fd = open_state_file(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, what="journal")
            try:
                self._repair(fd)
                os.write(fd, line.encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise JournalWriteError(f"cannot write the journal {self.path}: {exc.strerror or exc}",
                                    hint="free space in the state folder, or give a writable "
                                         "--state-dir") from exc
        if created:
            _fsync_dir(self.path.parent)
        return record

    @staticmethod
    def _repair(fd: int) -> None:
        """Cut a torn last line (no trailing newline) so the next record starts clean."""
        size = os.fstat(fd).st_size
        if size == 0:
            return
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) == b"\n":
            return
        # Find the last newline; everything after it is the torn record.
        chunk = 4096
        pos = size
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            os.lseek(fd, start, os.SEEK_SET)
            data = os.read(fd, pos - start)
            idx = data.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        os.ftruncate(fd, keep)
        os.fsync(fd)

    # -- reading ---------------------------------------------------------------
    def records(self) -> tuple[list[dict], bool]:
        """Return every complete record and whether a torn last line was skipped."""
        try:
            data = _read_nofollow(self.path)
        except FileNotFoundError:
            return [], False
        except UnsafeStatePathError:
            raise
        except OSError as exc:
            raise InputError(f"cannot read the journal {self.path}: {exc.strerror}",
                             hint="check the state folder's permissions") from exc
        lines = data.split(b"\n")
        torn = lines[-1] != b""
        out = []
        for n, raw in enumerate(lines[:-1], 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                raise InputError(f"{self.path}:{n}: a journal record is not JSON",
                                 hint="the journal was edited or damaged; "
                                      "move it aside once the service is known good") from None
            if isinstance(rec, dict) and "event" in rec:
                out.append(rec)
        return out, torn

    def last_run(self) -> RunHistory | None:
        """Rebuild the most recent run from the records (None when there is none)."""
        records, torn = self.records()
        start = None
        for i, rec in enumerate(records):
            if rec.get("event") == Event.RUN_STARTED.value:
                start = i
        if start is None:
            return None
        head = records[start]
        steps = {s["id"]: StepRecord(s["id"], s["kind"]) for s in head.get("steps", [])}
        run = RunHistory(run_id=head.get("run_id", "?"), plan=head.get("plan", "?"),
                         plan_sha256=head.get("plan_sha256", ""), service=head.get("service", "?"),
                         pid=int(head.get("pid") or 0), host=head.get("host", "?"),
                         started=float(head.get("time") or 0), steps=steps,
                         specs=list(head.get("steps", [])), mode=head.get("mode", "run"),
                         torn_tail=torn)
        for rec in records[start + 1:]:
            _apply_record(run, rec)
        return run


def _apply_record(run: RunHistory, rec: dict) -> None:
    try:
        event = Event(rec.get("event"))
    except ValueError:
        return
    if event == Event.RUN_RESUMED:
        run.outcome = run.exit_code = run.message = run.finished = None
        return
    if event == Event.RUN_FINISHED:
        run.outcome = RunOutcome(rec["outcome"])
        run.exit_code = rec.get("exit_code")
        run.message = rec.get("message")
        run.finished = rec.get("time")
        return
    step = run.steps.get(rec.get("step", ""))
    if step is None:
        return
    if event == Event.STEP_PROGRESS:
        step.progress.update(rec.get("data") or {})
        return
    step.state = _STATE_AFTER[event]
    if event == Event.STEP_STARTED:
        step.intent = rec.get("intent") or {}
        step.started = rec.get("time")
        step.error = step.hint = step.changes = None
    elif event == Event.STEP_DONE:
        step.facts = rec.get("facts") or {}
        step.changes = rec.get("changes")
        step.finished = rec.get("time")
    elif event == Event.STEP_FAILED:
        step.error, step.hint = rec.get("error"), rec.get("hint")
        step.changes = rec.get("changes")
        step.finished = rec.get("time")
    elif event == Event.UNDO_FAILED:
        step.undo_error = rec.get("error")
    elif event == Event.UNDO_DONE:
        step.undo_error = None


class MemoryJournal(Journal):
    """A journal kept in memory: dry runs record nothing on disk."""

    def __init__(self) -> None:
        super().__init__(Path("<memory>"))
        self.lines: list[dict] = []

    def append(self, event: Event, **fields: Any) -> dict:
        record = {"event": event.value, "time": round(time.time(), 3), **fields}
        self.lines.append(json.loads(json.dumps(record, default=str)))
        return record

    def records(self) -> tuple[list[dict], bool]:
        return list(self.lines), False


def _read_nofollow(path: Path) -> bytes:
    """Read the journal, refusing a symlink planted in its place."""
    if os.path.islink(path):
        raise UnsafeStatePathError(f"the journal {path} is a symlink (to {os.readlink(path)}); "
                                   "refusing to follow it", hint=f"remove the symlink {path}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _fsync_dir(path: Path) -> None:
    """Make a new journal's folder entry durable (POSIX; Windows cannot open a folder)."""
    if WINDOWS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
