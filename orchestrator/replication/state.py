"""The resume state of a (source, target) pair: a cursor and the failed items.

One small JSON file per pair in the state dir, named by a hash of the pair's
kind and URLs without credentials. Written atomically (temp file, fsync,
rename), so a kill at any moment leaves the previous or the new state. The
cursor only moves past items that are finished (copied, present, skipped or
recorded as failed): whatever was in flight is redone, which is safe because
a copy is idempotent (same instance ID on every Orthanc).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError

DEFAULT_STATE_DIR = "/var/lib/orchestrator"
STATE_VERSION = 1
MAX_FAILURES = 10000  # kept for retry on the next run; beyond, counted only


@dataclass
class ResumeState:
    kind: str
    source: str  # without credentials
    target: str
    cursor: Any = None  # listing-specific: change Seq, attachment rowid, relative path
    listed: int = 0  # instances listed up to the cursor (completeness check)
    failures: dict[str, str] = field(default_factory=dict)  # item -> reason
    failures_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"version": STATE_VERSION, "kind": self.kind, "source": self.source,
                "target": self.target, "cursor": self.cursor, "listed": self.listed,
                "failures": self.failures, "failures_dropped": self.failures_dropped,
                "extra": self.extra}

    def record_failure(self, item: str, reason: str) -> None:
        if item in self.failures or len(self.failures) < MAX_FAILURES:
            self.failures[item] = reason
        else:
            self.failures_dropped += 1


class StateStore:
    """Load and save the resume state of one pair in `directory`."""

    def __init__(self, directory: str | Path, kind: str, source: str, target: str):
        self.directory = Path(directory)
        self.kind, self.source, self.target = kind, source, target
        digest = hashlib.sha256(f"{kind}\0{source}\0{target}".encode()).hexdigest()[:24]
        self.path = self.directory / f"{kind}-{digest}.json"

    def fresh(self) -> ResumeState:
        return ResumeState(self.kind, self.source, self.target)

    def load(self) -> ResumeState:
        """Return the saved state, or a fresh one when there is none (or it is unusable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self.fresh()
        except (OSError, ValueError):
            return self.fresh()  # torn or foreign: a full pass is always safe
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION or \
                data.get("kind") != self.kind or data.get("source") != self.source or \
                data.get("target") != self.target:
            return self.fresh()
        failures = data.get("failures") if isinstance(data.get("failures"), dict) else {}
        return ResumeState(self.kind, self.source, self.target, data.get("cursor"),
                           int(data.get("listed") or 0),
                           {str(k): str(v) for k, v in failures.items()},
                           int(data.get("failures_dropped") or 0),
                           data.get("extra") if isinstance(data.get("extra"), dict) else {})

    def save(self, state: ResumeState) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(state.to_dict(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise InputError(f"cannot write the resume state in {self.directory}: "
                             f"{exc.strerror or exc}",
                             hint="give a writable --state-dir (or ORCHESTRATOR_STATE_DIR)") from None

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Watermark:
    """The highest key below which every item is finished, for items finished out of order.

    Keys are added in increasing order; `finish(token)` may come in any order.
    Each entry carries a weight (1 per listed instance) summed into `weight`.
    """

    def __init__(self, cursor: Any = None, weight: int = 0):
        self.cursor = cursor
        self.weight = weight
        self._next = 0
        self._pending: deque[list] = deque()  # [token, key, weight, finished]
        self._index: dict[int, list] = {}

    def add(self, key: Any, weight: int = 0) -> int:
        token = self._next
        self._next += 1
        entry = [token, key, weight, False]
        self._pending.append(entry)
        self._index[token] = entry
        return token

    def finish(self, token: int) -> None:
        entry = self._index.pop(token, None)
        if entry is None:
            return
        entry[3] = True
        while self._pending and self._pending[0][3]:
            _, key, weight, _ = self._pending.popleft()
            self.cursor = key
            self.weight += weight

    @property
    def in_flight(self) -> int:
        return len(self._pending)
