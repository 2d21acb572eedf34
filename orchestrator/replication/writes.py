"""The one place where a replication run's dry run is decided: every write goes through `Writes`.

A replication run writes in two ways: it sends an instance to the target (the
POST, with the GET that feeds it), and it saves its resume state (it deletes
nothing). Each goes through `Writes.apply` with the action and what a dry run
answers instead; nothing else in `orchestrator/replication` knows whether the
run is dry, so no forgotten check can write to a production server. Like
`host/changes.py` for upgrades, the same code builds the dry and the real run;
unlike it, each write is counted by kind rather than kept as a line, so a run of
millions of instances holds a few counters, not millions of strings.

Checks of a write's effect (`--verify`) go through `Writes.check`: they are
described and not run in a dry run, as a step that only verifies an earlier
step's effect (DESIGN.md, idea 1).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import TypeVar

T = TypeVar("T")


class Write(Enum):
    """What a replication run changes (or would change)."""

    SEND = "send an instance to the target"
    SAVE_STATE = "save the resume state"
    VERIFY = "verify instances on the target"  # not a write: checks the writes' effect


class Writes:
    """Act on each write, or only count it when `dry`. Thread-safe (workers send)."""

    def __init__(self, dry: bool = False):
        self.dry = dry
        self.counts: Counter[Write] = Counter()  # done or, in a dry run, would be done
        self._lock = threading.Lock()

    def apply(self, kind: Write, action: Callable[[], T], would: T) -> T:
        """Count `kind`; return `action()`, or `would` in a dry run without calling it."""
        with self._lock:
            self.counts[kind] += 1
        if self.dry:
            return would
        return action()

    def check(self, action: Callable[[], T], would: T) -> T:
        """Run a check of the writes' effect (--verify), or return `would` in a dry run."""
        return self.apply(Write.VERIFY, action, would)

    def learns_from_sends(self) -> bool:
        """Whether the target's answers to sends are real (a dry run sends nothing, so it
        must ask the target about every instance to count what is already there)."""
        return not self.dry
