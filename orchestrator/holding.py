"""A use case's hold on a service: its run lock and the per-Orthanc locks, with SIGTERM and
SIGHUP turned into an interruption the engine rolls back on (and ignored while it is
already going backwards). `runs` and `reverts` both run inside it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.engine import Engine
from orchestrator.errors import JournalOpenError
from orchestrator.plan import Plan
from orchestrator.wiring import lock_for, orthanc_locks

INTERRUPTING = ("SIGTERM", "SIGHUP")  # names: Windows has no SIGHUP
Notify = Callable[[str], None]  # a message the operator should see at once (a stale lock)


@dataclass
class Held:
    """What a locked use case shares with its signal handler: the notes, and its engine."""

    notes: list[str]
    engine: Engine | None = None


@contextmanager
def locked(plan: Plan, state: Path, command: str, notify: Notify | None) -> Iterator[Held]:
    """Hold the service's run lock (yielding the notes to report) with signals interrupting."""
    lock = lock_for(state, plan.service.name)
    try:
        lock.acquire(command)
    except JournalOpenError as exc:
        # The lock's own hint names a bare `status`, which reads the default state folder.
        raise JournalOpenError(exc.message, hint=f"wait for it to finish; `orchestrator status "
                                                 f"{plan.source}` shows it") from None
    held = []
    try:
        for other in orthanc_locks(plan):
            other.acquire(command, service=plan.service.name, state_dir=state)
            held.append(other)
        notes = [n for n in [lock.stale_message()] if n]
        for note in notes:
            if notify is not None:
                notify(note)
        held_ = Held(notes)
        with signals_interrupt(held_):
            yield held_
    finally:
        for other in reversed(held):
            other.release()
        lock.release()


@contextmanager
def signals_interrupt(held: Held) -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt (the engine rolls back on it); only in the
    main thread, the one place Python lets a handler be set, and only the signals that exist.
    Once the engine is going backwards (a rollback, or undoing after a failure) they are
    noted and ignored: a stop of the tool must not cut its own rollback short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        engine = held.engine
        if engine is not None and engine.undoing:
            note = f"signal {signum} received during the rollback: ignored until it ends"
            if note not in engine.report.notes:
                engine.report.notes.append(note)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    wanted = [s for s in (getattr(signal, name, None) for name in INTERRUPTING) if s is not None]
    previous = {s: signal.signal(s, interrupt) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
