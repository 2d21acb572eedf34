"""Follow a source's /changes log into a target, one pass at a time, from a recorded sequence.

What a blue/green move is built on: a `Pair` (source, target, and the folder
holding their resume state) and `follow(pair, ...)`, one incremental
`replicate` pass that copies what the source's log lists after the saved
cursor and returns a `Pass` (counts, seconds, the cursor it reached). The
first pass starts at 0 (everything); `prime` records another starting point
(the sequence number at a switch, so that a carry-back only looks at what
arrived since). Passes are resumable across tool restarts: the cursor lives in
the pair's resume state file, written as the copy goes.

Every write goes through the replication run's `Writes`, made from the host's
`Changes` (`writes_for`): the dry run is decided there, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.host.changes import Changes
from orchestrator.replication import inventory, listing
from orchestrator.replication.importer import StorageImport
from orchestrator.replication.options import DEFAULT_WORKERS, Options, PresenceMode
from orchestrator.replication.outcome import CopyOutcome, Summary
from orchestrator.replication.pool import RetryPolicy
from orchestrator.replication.replicate import Replication
from orchestrator.replication.state import ResumeState, StateStore
from orchestrator.replication.target import count_instances
from orchestrator.replication.transport import Endpoint
from orchestrator.replication.writes import Writes

KIND = "replicate"  # the same resume state as `orchestrator replicate` for the same pair


@dataclass(frozen=True)
class Pair:
    """A source, a target, and the folder of their resume state."""

    source: Endpoint
    target: Endpoint
    state_dir: Path
    workers: int = DEFAULT_WORKERS
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def store(self) -> StateStore:
        return StateStore(self.state_dir, KIND, self.source.base_url, self.target.base_url)

    def reversed(self) -> Pair:
        """The pair the other way round (a carry-back), with its own resume state."""
        return Pair(self.target, self.source, self.state_dir, self.workers, self.policy)


@dataclass(frozen=True)
class Pass:
    """What one pass copied, and where the source's log stood when it ended."""

    copied: int
    present: int
    skipped: int
    failed: int
    seconds: float
    cursor: int
    aborted: str | None = None
    failures: tuple[dict, ...] = ()
    would_copy: int = 0  # a dry run: what a real pass would send

    @property
    def ok(self) -> bool:
        return self.aborted is None and not self.failed

    def to_dict(self) -> dict:
        return {"copied": self.copied, "present": self.present, "skipped": self.skipped,
                "failed": self.failed, "seconds": round(self.seconds, 3), "cursor": self.cursor,
                "aborted": self.aborted, "would_copy": self.would_copy}

    def text(self) -> str:
        head = f"copied {self.copied}" if not self.would_copy else f"would copy {self.would_copy}"
        return (f"{head}, {self.present} already there, {self.failed} failed "
                f"in {self.seconds:.1f} s (change {self.cursor})")


def writes_for(changes: Changes) -> Writes:
    """The replication run's writes, acting or counting as the host's changes do."""
    return Writes(dry=changes.dry)


def last_seq(endpoint: Endpoint, policy: RetryPolicy | None = None) -> int:
    """The newest change's sequence number on `endpoint`."""
    return listing.last_seq(endpoint, policy or RetryPolicy())


def cursor_of(pair: Pair) -> int:
    """The sequence number up to which the pair's passes have copied (0: none yet)."""
    cursor = pair.store().load().cursor
    return cursor if isinstance(cursor, int) else 0


def prime(pair: Pair, since: int, changes: Changes) -> None:
    """Start the pair's next pass after change `since`, unless a pass already went further.

    The instances the source holds now count as listed, so the completeness check of a
    pass (fewer listed than the source holds: its log was cleared) does not sweep them all.
    """
    store = pair.store()
    if cursor_of(pair) >= since:
        return
    listed = count_instances(pair.source, pair.policy) or 0
    state = ResumeState(store.kind, store.source, store.target, cursor=since, listed=listed)
    changes.apply(f"record change {since} of {pair.source.base_url} as the point to copy from "
                  f"into {pair.target.base_url}", store.save, state)


def follow(pair: Pair, changes: Changes, *, verify: bool = False,
           progress: Callable[[int], None] | None = None) -> Pass:
    """Copy what the source's /changes lists after the saved cursor; one pass.
    `progress(n)` is called with the number of instances handled so far."""
    options = Options(workers=pair.workers, verify=verify, presence=PresenceMode.AUTO,
                      policy=pair.policy)
    writes = writes_for(changes)
    report = (lambda summary, total: progress(summary.processed)) if progress else None
    summary = Replication(pair.source, pair.target, pair.store(), options, writes,
                          report).run()
    return _pass(summary, cursor_of(pair))


def _pass(summary: Summary, cursor: int) -> Pass:
    return Pass(copied=summary.count(CopyOutcome.COPIED), present=summary.count(CopyOutcome.PRESENT),
                skipped=summary.count(CopyOutcome.SKIPPED), failed=summary.count(CopyOutcome.FAILED),
                seconds=summary.elapsed, cursor=cursor, aborted=summary.aborted,
                failures=tuple(summary.failures[:20]),
                would_copy=summary.count(CopyOutcome.WOULD_COPY))


def follow_storage(storage_dir: Path, index: Path, pair: Pair, changes: Changes) -> Pass:
    """Copy, from the stopped source's storage folder, the instances its change log lists
    after the pair's cursor (`import-storage` from the first attachment row of those)."""
    since = cursor_of(pair)
    row = inventory.first_row_after(index, since)
    if row is None:
        return Pass(0, 0, 0, 0, 0.0, since)
    store = StateStore(pair.state_dir, "import-storage", str(storage_dir), pair.target.base_url)
    state = ResumeState(store.kind, store.source, store.target, cursor=row - 1,
                        extra={"mode": "index"})
    changes.apply(f"import from {storage_dir} into {pair.target.base_url} the instances "
                  f"stored after change {since} (attachment row {row} on)", store.save, state)
    options = Options(workers=pair.workers, index=index, presence=PresenceMode.AUTO,
                      policy=pair.policy)
    summary = StorageImport(storage_dir, pair.target, store, options, writes_for(changes)).run()
    return _pass(summary, since)
