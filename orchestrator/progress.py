"""A one-line progress bar with rate and ETA on a terminal; silent anywhere else."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

WIDTH = 24
WINDOW = 10.0  # seconds of history for the rate


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(label: str, done: int, total: int | None, rate: float | None, detail: str = "") -> str:
    """The bar as one line (pure: tested without a terminal)."""
    parts = [label]
    if total:
        frac = min(1.0, done / total)
        filled = int(frac * WIDTH)
        parts.append(f"[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} {frac:4.0%}")
    else:
        parts.append(f"{done}")
    if rate:
        parts.append(f"{rate:.0f}/s")
        if total and done < total:
            parts.append(f"ETA {format_duration((total - done) / rate)}")
    if detail:
        parts.append(detail)
    return "  ".join(parts)


class Progress:
    """Draw `render(...)` in place at most every `interval` seconds when `stream` is a TTY."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None,
                 interval: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.interval = interval
        self.clock = clock
        self._last_draw = 0.0
        self._history: deque[tuple[float, int]] = deque()
        self._width = 0

    def rate(self, done: int) -> float | None:
        now = self.clock()
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > WINDOW:
            self._history.popleft()
        t0, d0 = self._history[0]
        return (done - d0) / (now - t0) if now > t0 else None

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        if not self.enabled:
            return
        rate = self.rate(done)
        now = self.clock()
        if now - self._last_draw < self.interval and (total is None or done < total):
            return
        self._last_draw = now
        line = render(self.label, done, total, rate, detail)
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
