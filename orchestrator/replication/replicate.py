"""Copy every instance of one Orthanc into another over REST: parallel, resumable, verified.

Order of a run: retry the failures the last run recorded, then follow the
source's /changes log from the saved cursor. A full pass (from the start)
counts the NewInstance changes: fewer than the source's instances means its
log was cleared, and /instances is swept as well. Each instance: ask the
target (see `Presence`), GET the file from the source (identity encoding) and
relay its body into the POST to the target through a fixed buffer (see
bodies.RelayBody), and check the ID the target computed is the one listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from orchestrator.errors import InputError, OrthancHttpError
from orchestrator.host.clock import Clock
from orchestrator.replication import listing
from orchestrator.replication.bodies import RelayBody
from orchestrator.replication.options import Options, PresenceMode
from orchestrator.replication.outcome import CopyOutcome, Result, Summary
from orchestrator.replication.pool import REAL_CLOCK, TransferPool, Work, recording_pool, with_retries
from orchestrator.replication.state import ResumeState, StateStore, Watermark
from orchestrator.replication.target import (Presence, connect, count_instances, has_instance,
                                             hint_suffix, limit_warnings, stored)
from orchestrator.replication.transport import Answer, BodyError, Endpoint
from orchestrator.replication.verify import verify_replica
from orchestrator.replication.writes import Write, Writes


class Side(Enum):
    SOURCE = "source"
    TARGET = "target"


@dataclass(frozen=True)
class Relayed:
    """How one GET -> POST relay ended: the answer that ended it, and from which side."""

    side: Side
    answer: Answer
    size: int = 0

    @property
    def status(self) -> int:
        return self.answer.status


class Replication:
    """One run of `replicate`; `progress(done, total)` is called as results come in."""

    def __init__(self, source: Endpoint, target: Endpoint, store_: StateStore,
                 options: Options, writes: Writes,
                 progress: Callable[[Summary, int | None], None] | None = None,
                 clock: Clock = REAL_CLOCK):
        if source.base_url == target.base_url:
            raise InputError(f"source and target are the same server ({source.base_url})",
                             hint="give two different Orthanc URLs")
        self.source, self.target, self.state_store = source, target, store_
        self.options, self.writes, self.clock = options, writes, clock
        self.progress = progress or (lambda summary, total: None)
        # A dry run sends nothing, so no POST answers AlreadyStored: it asks about each one.
        self.presence = Presence(options.presence if writes.learns_from_sends()
                                 else PresenceMode.ALWAYS)
        self.summary = Summary("replicate", source.base_url, target.base_url, dry=writes.dry)
        self.total: int | None = None

    def run(self) -> Summary:
        opts, policy = self.options, self.options.policy
        started = self.clock.now()
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
        # An unwritable state dir fails now, not mid-run.
        self.writes.apply(Write.SAVE_STATE, lambda: self.state_store.save(state), None)
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
            self.presence = Presence(PresenceMode.ALWAYS)  # a gap-filler: most are there already
            sweep = (Work(None, w.item) for w in listing.instances(self.source, policy))
            aborted = pool.run(sweep, self._copy, Watermark())
        self.summary.aborted = aborted
        if opts.verify and aborted is None:
            self.summary.verify = self.writes.check(
                lambda: verify_replica(self.source, self.target, opts.workers, policy), None)
        self.summary.elapsed = self.clock.now() - started
        return self.summary

    def _pool(self, state: ResumeState, main: Watermark) -> TransferPool:
        # The /changes cursor is a sequence number; anything else is a placeholder.
        return recording_pool(self, state, main, cursor_ok=lambda cursor: isinstance(cursor, int))

    # -- one instance -------------------------------------------------------------
    def _copy(self, iid: str) -> Result:
        policy = self.options.policy
        if self.presence.should_ask():
            lookup = has_instance(self.target, iid, policy, self.clock)
            if lookup.present is None:
                return Result(CopyOutcome.FAILED, iid, lookup.reason, status=lookup.status)
            self.presence.record(lookup.present)
            if lookup.present:
                return Result(CopyOutcome.PRESENT, iid, instance_id=iid)
        return self.writes.apply(Write.SEND, lambda: self._send(iid),
                                 Result(CopyOutcome.WOULD_COPY, iid, instance_id=iid))

    def _send(self, iid: str) -> Result:
        """Relay the source's file into the target (GET and POST retried together)."""
        path = f"/instances/{iid}/file"
        relayed = with_retries(lambda: self._relay(path), self.options.policy, self.clock)
        answer = relayed.answer
        if relayed.side is Side.SOURCE:
            if answer.status == 404:
                if has_instance(self.source, iid, self.options.policy,
                                self.clock).present is False:
                    return Result(CopyOutcome.SKIPPED, iid, "gone from the source since it was listed")
                return Result(CopyOutcome.FAILED, iid, "the source lists it but cannot serve its "
                              f"file (GET {path}: HTTP 404)", status=404)
            if answer.status == 200:  # 200 with an empty body
                return Result(CopyOutcome.FAILED, iid, "the source sent an empty file")
            return Result(CopyOutcome.FAILED, iid, f"source GET {path}: HTTP {answer.status}"
                          f"{listing.detail(answer.data)}{hint_suffix(answer.status)}",
                          status=answer.status)
        result = stored(answer, iid)
        if result.outcome is CopyOutcome.PRESENT:
            self.presence.record(True)
        return Result(result.outcome, iid, result.reason, size=relayed.size,
                      instance_id=result.instance_id or iid, status=result.status)

    def _relay(self, path: str) -> Relayed:
        """One GET -> POST. Raises OrthancHttpError (transient) when either side broke off."""
        reply = self.source.open(path)
        if reply.status != 200 or not reply.length:
            data = reply.read()  # an error, or a chunked answer (no length to relay with)
            if reply.status != 200 or not data:
                return Relayed(Side.SOURCE, Answer(reply.status, data))
            return Relayed(Side.TARGET, self.target.post("/instances", data), len(data))
        body = RelayBody(reply, f"source GET {self.source.base_url}{path}")
        try:
            answer = self.target.post("/instances", body)
        except BodyError as exc:
            assert isinstance(exc.cause, OrthancHttpError)
            raise exc.cause from None
        except OrthancHttpError:
            reply.discard()  # its body is half read: that connection cannot be reused
            raise
        return Relayed(Side.TARGET, answer, body.length)
