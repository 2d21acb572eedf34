"""Copy every instance of one Orthanc into another over REST: parallel, resumable, verified.

Order of a run: retry the failures the last run recorded, then follow the
source's /changes log from the saved cursor. A full pass (from the start)
counts the NewInstance changes: fewer than the source's instances means its
log was cleared, and /instances is swept as well. Each instance: ask the
target (see `Presence`), GET the file from the source (identity encoding),
POST it, and check the ID the target computed is the one listed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.replication import listing
from orchestrator.replication.outcome import Outcome, Result, Summary
from orchestrator.replication.pool import (RetryPolicy, TransferPool, Work, recording_pool,
                                           with_retries)
from orchestrator.replication.state import ResumeState, StateStore, Watermark
from orchestrator.replication.target import (Presence, connect, count_instances, has_instance,
                                             hint_suffix, limit_warnings, store)
from orchestrator.replication.transport import Endpoint
from orchestrator.replication.verify import verify_replica

DEFAULT_WORKERS = 8  # measured: see docs/replication.md


@dataclass(frozen=True)
class Options:
    workers: int = DEFAULT_WORKERS
    dry_run: bool = False
    verify: bool = False
    full: bool = False  # ignore the saved cursor (a rerun still skips what is there)
    presence: str = "auto"  # auto | always | never
    target_config: Path | None = None
    policy: RetryPolicy = RetryPolicy()


class Replication:
    """One run of `replicate`; `progress(done, total)` is called as results come in."""

    def __init__(self, source: Endpoint, target: Endpoint, store_: StateStore,
                 options: Options, progress: Callable[[Summary, int | None], None] | None = None):
        if source.base_url == target.base_url:
            raise InputError(f"source and target are the same server ({source.base_url})",
                             hint="give two different Orthanc URLs")
        self.source, self.target, self.state_store = source, target, store_
        self.options = options
        self.progress = progress or (lambda summary, total: None)
        self.presence = Presence("always" if options.dry_run else options.presence)
        self.summary = Summary("replicate", source.base_url, target.base_url,
                               dry_run=options.dry_run)
        self.total: int | None = None

    def run(self) -> Summary:
        opts, policy = self.options, self.options.policy
        started = time.monotonic()
        connect(self.source, "source", policy)
        connect(self.target, "target", policy)
        self.summary.notes.extend(limit_warnings(opts.target_config))
        source_count = count_instances(self.source, policy)
        state = self.state_store.fresh() if opts.full else self.state_store.load()
        last = listing.last_seq(self.source, policy)
        cursor = state.cursor if isinstance(state.cursor, int) else 0
        if cursor > last:
            self.summary.warnings.append(f"the saved cursor ({cursor}) is past the source's last "
                                         f"change ({last}): the source was reset; starting over")
            state, cursor = self.state_store.fresh(), 0
        if not opts.dry_run:
            self.state_store.save(state)  # an unwritable state dir fails now, not mid-run
        if cursor:
            self.summary.resumed_from = f"change {cursor}"
        if source_count is not None:
            self.total = max(0, source_count - state.listed) if cursor else source_count
            self.total += len(state.failures)
        watermark = Watermark(cursor, state.listed)
        pool = self._pool(state, watermark)
        # First the failures the last run recorded, then the log from the cursor.
        retry = [Work(None, iid) for iid in state.failures if listing.is_instance_id(iid)]
        failures_before = dict(state.failures)
        state.failures.clear()
        aborted = pool.run(retry, self._copy, Watermark())
        if aborted is not None:
            for item, reason in failures_before.items():
                state.failures.setdefault(item, reason)
        else:
            aborted = pool.run(listing.changes(self.source, cursor, policy), self._copy, watermark)
        # `listed` counts the NewInstance changes since the first pass started at 0.
        if aborted is None and source_count is not None and watermark.weight < source_count:
            self.summary.warnings.append(
                f"the source's change log lists {watermark.weight} of its {source_count} "
                "instances (it was cleared): swept /instances as well")
            self.presence = Presence("always")  # a gap-filler: most are there already
            sweep = (Work(None, w.item) for w in listing.instances(self.source, policy))
            aborted = pool.run(sweep, self._copy, Watermark())
        self.summary.aborted = aborted
        if opts.verify and not opts.dry_run and aborted is None:
            self.summary.verify = verify_replica(self.source, self.target, opts.workers, policy)
        self.summary.elapsed = time.monotonic() - started
        return self.summary

    def _pool(self, state: ResumeState, main: Watermark) -> TransferPool:
        # The /changes cursor is a sequence number; anything else is a placeholder.
        return recording_pool(self, state, main, cursor_ok=lambda cursor: isinstance(cursor, int))

    # -- one instance -------------------------------------------------------------
    def _copy(self, iid: str) -> Result:
        policy = self.options.policy
        if self.presence.should_ask():
            present, problem = has_instance(self.target, iid, policy)
            if problem:
                return Result(Outcome.FAILED, iid, problem, transient="HTTP 5" in problem)
            self.presence.record(bool(present))
            if present:
                return Result(Outcome.PRESENT, iid, instance_id=iid)
        if self.options.dry_run:
            return Result(Outcome.WOULD_COPY, iid, instance_id=iid)
        answer = with_retries(lambda: self.source.get(f"/instances/{iid}/file"), policy)
        if answer.status == 404:
            listed, _ = has_instance(self.source, iid, policy)
            if listed is False:
                return Result(Outcome.SKIPPED, iid, "gone from the source since it was listed")
            return Result(Outcome.FAILED, iid, "the source lists it but cannot serve its file "
                          f"(GET /instances/{iid}/file: HTTP 404)")
        if answer.status != 200:
            return Result(Outcome.FAILED, iid, f"source GET /instances/{iid}/file: HTTP "
                          f"{answer.status}{listing.detail(answer.data)}"
                          f"{hint_suffix(answer.status)}", transient=answer.status >= 500)
        if not answer.data:
            return Result(Outcome.FAILED, iid, "the source sent an empty file")
        stored = store(self.target, answer.data, iid, policy)
        if stored.outcome is Outcome.PRESENT:
            self.presence.record(True)
        return Result(stored.outcome, iid, stored.reason, size=len(answer.data),
                      instance_id=stored.instance_id or iid, transient=stored.transient)
