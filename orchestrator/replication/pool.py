"""The transfer pool: N workers over a bounded window, retries, resumable checkpoints.

The listing is consumed lazily (never buffered whole): at most `window` items
are in flight. Results come back to the calling thread, which alone touches
the summary, the watermark and the resume state. A run stops early (and says
why) when a side is unreachable after retries or when many instances in a row
fail for a transient reason; the state then lets a rerun continue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any, Protocol, TypeVar

from orchestrator.errors import OrthancHttpError
from orchestrator.host.clock import Clock, RealClock
from orchestrator.replication.outcome import CopyOutcome, Result, is_transient
from orchestrator.replication.state import Watermark
from orchestrator.replication.writes import Write

REAL_CLOCK = RealClock()


@dataclass(frozen=True)
class Work:
    """One item to process; `key` orders it in the listing (None: outside the listing)."""

    key: Any
    item: Any
    weight: int = 1


@dataclass(frozen=True)
class Checkpoint:
    """A listing position with nothing to do (a change that is not a new instance)."""

    key: Any
    weight: int = 0


@dataclass(frozen=True)
class Done:
    """A listing entry whose result is known without a worker (a file to skip)."""

    key: Any
    result: Result
    weight: int = 0


class Unreachable(Exception):
    """A side did not answer at all, even after retries: stop the run."""

    def __init__(self, error: OrthancHttpError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # 0.5 + 1 + 2 + 4 + 8 s of waiting: rides over a restart
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * (2 ** attempt))


class Answered(Protocol):
    status: int


A = TypeVar("A", bound=Answered)


def with_retries(call: Callable[[], A], policy: RetryPolicy, clock: Clock = REAL_CLOCK) -> A:
    """Return the first non-transient answer, retrying connection errors and 5xx with backoff.

    After the last attempt, a transient answer is returned as it is (the caller
    records it) and a connection error raises Unreachable.
    """
    for attempt in range(policy.attempts):
        last = attempt == policy.attempts - 1
        try:
            answer = call()
        except OrthancHttpError as exc:
            if not exc.transient:
                raise Unreachable(exc) from None
            if last:
                raise Unreachable(exc) from None
        else:
            if not is_transient(answer.status) or last:
                return answer
        clock.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


class TransferPool:
    """Run `work(item) -> Result` over a listing with `workers` threads."""

    def __init__(self, workers: int, *, on_result: Callable[[Result], None],
                 save: Callable[[Watermark], None], save_every: float = 0.25,
                 save_count: int = 100, breaker: int | None = None,
                 clock: Clock = REAL_CLOCK):
        self.workers = max(1, workers)
        self.window = self.workers * 4
        self.on_result = on_result
        self.save = save
        self.save_every = save_every
        self.save_count = save_count
        self._unsaved = 0
        self.breaker = breaker or max(20, 3 * self.workers)
        self.clock = clock
        self.aborted: str | None = None
        self._streak = 0

    def run(self, listing: Iterable[Work | Checkpoint | Done], work: Callable[[Any], Result],
            watermark: Watermark) -> str | None:
        """Process the listing; return why the run stopped early, or None."""
        last_save = self.clock.now()
        inflight: dict[Future, int | None] = {}
        # Finished futures arrive here: O(1) per result, where wait() walks every one in flight.
        finished: SimpleQueue[Future] = SimpleQueue()
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="transfer")
        try:
            iterator = iter(listing)
            while self.aborted is None:
                try:
                    entry = next(iterator)
                except StopIteration:
                    break
                except Unreachable as exc:
                    self.aborted = exc.error.message
                    break
                except OrthancHttpError as exc:
                    self.aborted = f"listing failed: {exc.message}"
                    break
                if isinstance(entry, Checkpoint):
                    watermark.finish(watermark.add(entry.key, entry.weight))
                    continue
                if isinstance(entry, Done):
                    self._record(entry.result, watermark.add(entry.key, entry.weight)
                                 if entry.key is not None else None, watermark)
                    continue
                token = watermark.add(entry.key, entry.weight) if entry.key is not None else None
                future = executor.submit(work, entry.item)
                inflight[future] = token
                future.add_done_callback(finished.put)
                while len(inflight) >= self.window and self.aborted is None:
                    self._collect(inflight, finished.get(), watermark)
                if self._unsaved >= self.save_count or \
                        self.clock.now() - last_save >= self.save_every:
                    self.save(watermark)
                    last_save, self._unsaved = self.clock.now(), 0
            while inflight:
                self._collect(inflight, finished.get(), watermark)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            self.save(watermark)
        return self.aborted

    def _collect(self, inflight: dict[Future, int | None], future: Future,
                 watermark: Watermark) -> None:
        token = inflight.pop(future)
        try:
            result = future.result()
        except Unreachable as exc:
            # Not finished: the watermark stays before it, and a rerun redoes it.
            if self.aborted is None:
                self.aborted = exc.error.message
            return
        if self.aborted is not None and result.transient:
            return  # a casualty of the stop, redone on the next run
        self._record(result, token, watermark)

    def _record(self, result: Result, token: int | None, watermark: Watermark) -> None:
        self.on_result(result)
        self._unsaved += 1
        if token is not None:
            watermark.finish(token)
        if result.outcome is CopyOutcome.FAILED and result.transient:
            self._streak += 1
            if self._streak >= self.breaker and self.aborted is None:
                self.aborted = (f"stopped after {self._streak} instances in a row failed; "
                                f"last: {result.reason}")
        else:
            self._streak = 0


def recording_pool(job: Any, state: Any, main: Watermark, *,
                   cursor_ok: Callable[[object], bool]) -> TransferPool:
    """A pool for a replication job: results go to `job.summary` (failures also to the resume
    state) and `job.progress`; saves write `state` through `job.state_store`, by way of
    `job.writes`, moving its cursor only with the `main` listing's watermark.

    `job` has: options (workers), writes, summary, progress(summary, total), total,
    state_store, clock. `cursor_ok` tells a cursor worth saving from a placeholder.
    """
    def on_result(result: Result) -> None:
        job.summary.add(result)
        if result.outcome is CopyOutcome.FAILED:
            state.record_failure(result.item, result.reason)
        job.progress(job.summary, job.total)

    def save(watermark: Watermark) -> None:
        if watermark is main and cursor_ok(main.cursor):
            state.cursor, state.listed = main.cursor, main.weight
        job.writes.apply(Write.SAVE_STATE, lambda: job.state_store.save(state), None)

    return TransferPool(job.options.workers, on_result=on_result, save=save, clock=job.clock)
