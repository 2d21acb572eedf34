"""What happened to each instance, and the run's summary (counts, reasons, exit code)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from orchestrator.errors import ExitCode

MAX_LISTED = 1000  # failures (and verify problems) listed one by one; beyond, only counted
# HTTP statuses that may pass on their own (overload, restart): retried, then counted as transient.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def is_transient(status: int | None) -> bool:
    """True for an HTTP status worth retrying (5xx from a busy or restarting server, 408, 429)."""
    return status is not None and status in TRANSIENT_STATUS


class CopyOutcome(Enum):
    COPIED = "copied"
    PRESENT = "already present"
    WOULD_COPY = "would copy"  # --dry-run
    SKIPPED = "skipped"  # not to be copied: not DICOM, no pixels, gone from the source
    FAILED = "failed"

    @property
    def key(self) -> str:
        """The name in --json output: already_present, would_copy, ..."""
        return self.value.replace(" ", "_")


@dataclass(frozen=True)
class Result:
    """The outcome for one item (an instance ID, or a storage file's relative path)."""

    outcome: CopyOutcome
    item: str
    reason: str = ""
    size: int = 0
    instance_id: str = ""
    status: int | None = None  # the HTTP status of the answer that made it fail, if any

    @property
    def transient(self) -> bool:
        """Failed for a reason that may pass (a 5xx, 408 or 429 answer)."""
        return self.outcome is CopyOutcome.FAILED and is_transient(self.status)


@dataclass
class Summary:
    """Counts and reasons of one run; owns the exit code."""

    kind: str  # "replicate" | "import-storage"
    source: str  # redacted URL or folder
    target: str  # redacted URL
    dry: bool = False  # nothing was written: every copy was only counted
    counts: Counter = field(default_factory=Counter)  # CopyOutcome -> n
    skipped: Counter = field(default_factory=Counter)  # reason -> n
    failures: list[dict] = field(default_factory=list)  # first MAX_LISTED {item, reason}
    bytes_copied: int = 0
    elapsed: float = 0.0
    aborted: str | None = None  # why the run stopped early (the state lets a rerun resume)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informative, not a problem
    resumed_from: str | None = None
    verify: dict | None = None  # filled by --verify

    def add(self, result: Result) -> None:
        self.counts[result.outcome] += 1
        if result.outcome is CopyOutcome.COPIED:
            self.bytes_copied += result.size
        elif result.outcome is CopyOutcome.SKIPPED:
            self.skipped[result.reason] += 1
        elif result.outcome is CopyOutcome.FAILED and len(self.failures) < MAX_LISTED:
            self.failures.append({"item": result.item, "reason": result.reason})

    def count(self, outcome: CopyOutcome) -> int:
        return self.counts.get(outcome, 0)

    @property
    def verify_ok(self) -> bool:
        return self.verify is None or bool(self.verify.get("ok"))

    @property
    def ok(self) -> bool:
        return not self.count(CopyOutcome.FAILED) and self.aborted is None and self.verify_ok

    @property
    def exit_code(self) -> ExitCode:
        # One code for "something was not copied or did not verify": the summary says what.
        return ExitCode.OK if self.ok else ExitCode.REFUSED

    def count_table(self) -> dict[str, int]:
        """Every outcome's --json name and count, zeros included."""
        return {o.key: self.count(o) for o in CopyOutcome}

    @property
    def processed(self) -> int:
        return sum(self.counts.values())
