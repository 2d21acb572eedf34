"""Live output: step lines and a one-line progress bar on a terminal, timestamped plain
lines anywhere else.

Off a terminal (a redirect, a pipe, journald under the systemd unit) nothing is
drawn in place: progress becomes a plain line, with a UTC timestamp, every
PLAIN_INTERVAL seconds and at the end, so a log shows the run while it happens
and a killed run still leaves what it did. The output level (`--quiet`,
`--verbose`) is chosen once, by the command line, with `set_level`. `fit`
makes any text printable on a narrow encoding (cp1252, ASCII): the glyphs of
bars and dashes have ASCII stand-ins, and anything else becomes "?".
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any, TextIO

WIDTH = 24
WINDOW = 10.0  # seconds of history for the rate
PLAIN_INTERVAL = 5.0  # seconds between two plain progress lines off a terminal
ASCII_FOR = {"█": "#", "▒": "=", "—": "-", "–": "-", "…": "...", "→": "->", "←": "<-",
             "≠": "!=", "≥": ">=", "≤": "<="}


class Level(IntEnum):
    """How much live output a command writes to stderr."""

    QUIET = 0  # nothing live: only the final report and errors
    NORMAL = 1  # steps, undo, upgrade log lines, transfer progress
    VERBOSE = 2  # also each step's changes and notes as they happen


_LEVEL = [Level.NORMAL]  # set once by the command line (the CLI edge owns it)


def set_level(level: Level) -> None:
    """Choose the live output level for this process (the CLI's --quiet / --verbose)."""
    _LEVEL[0] = Level(level)


def output_level() -> Level:
    return _LEVEL[0]


def stamp(clock: Callable[[], float] = time.time) -> str:
    """A UTC timestamp for a plain line: 2026-11-28T09:01:02.345Z."""
    now = clock()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def fit(text: str, stream: TextIO | None) -> str:
    """`text` as `stream`'s encoding can print it (ASCII stand-ins, then "?")."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except (UnicodeEncodeError, LookupError):
        pass
    for glyph, plain in ASCII_FOR.items():
        text = text.replace(glyph, plain)
    try:
        return text.encode(encoding, errors="replace").decode(encoding)
    except LookupError:
        return text.encode("ascii", errors="replace").decode("ascii")


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


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
    """Draw `render(...)` in place at most every `interval` seconds when `stream` is a TTY;
    elsewhere write it as a timestamped plain line every PLAIN_INTERVAL seconds and at the end
    (`plain`); nothing at all under --quiet."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None,
                 interval: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 plain: bool | None = None):
        self.label = label
        self.stream = stream or sys.stderr
        tty = is_terminal(self.stream)
        quiet = output_level() == Level.QUIET
        self.enabled = (tty and not quiet) if enabled is None else enabled
        # Plain lines go to the process's own stderr off a terminal (a log, journald).
        self.plain = (stream is None and not tty and not quiet and enabled is None) \
            if plain is None else plain
        self.interval = interval
        self.clock = clock
        self._last_draw = 0.0
        self._history: deque[tuple[float, int]] = deque()
        self._width = 0
        self._ended = False

    def rate(self, done: int) -> float | None:
        now = self.clock()
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[0][0] > WINDOW:
            self._history.popleft()
        t0, d0 = self._history[0]
        return (done - d0) / (now - t0) if now > t0 else None

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        if self.plain:
            self._plain(done, total, detail)
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
        self.stream.write(fit("\r" + line + " " * pad, self.stream))
        self.stream.flush()

    def _plain(self, done: int, total: int | None, detail: str) -> None:
        rate = self.rate(done)
        now = self.clock()
        finished = total is not None and done >= total
        if self._last_draw and now - self._last_draw < PLAIN_INTERVAL and not finished:
            return
        if self._ended:
            return  # the final line is written once
        self._last_draw, self._ended = now, finished
        line = f"{stamp()} {render(self.label, done, total, rate, detail)}"
        self.stream.write(fit(line, self.stream) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


class StepProgress:
    """Live step progress on stderr while the engine works, at the process's output level
    (`output_level()`: nothing under --quiet, each step's changes too under
    --verbose). On a terminal plain lines; anywhere else (a log file, a pipe, journald) each
    line starts with a UTC timestamp and is flushed at once, so the log shows the run live.
    (The transfer bar is `Progress`.)"""

    def __init__(self, stream: TextIO | None = None, level: Level | None = None):
        self.stream = stream or sys.stderr
        self.level = output_level() if level is None else level
        self.live = self.level > Level.QUIET
        self.tty = is_terminal(self.stream)

    def __call__(self, event: str, **data: Any) -> None:
        if not self.live:
            return
        step = data.get("step", "")
        if event == "step-started":
            self._line(f"-> {step}: {data.get('text', '')}")
        elif event == "step-line":
            self._line(f"   | {_short(data.get('line', ''), 160)}")
        elif event == "step-finished":
            self._line(f"   {data.get('status')} {step} {_seconds(data.get('seconds'))} "
                       f"{_short(data.get('detail', ''), 140)}")
            if self.level >= Level.VERBOSE:
                for change in data.get("changes") or ():
                    self._line(f"     - {_short(change, 160)}")
        elif event == "undo-started":
            self._line(f"<- undo {step}")
        elif event == "undo-finished":
            self._line(f"   {'undone' if data.get('ok') else 'UNDO FAILED'} {step}: "
                       f"{_short(data.get('detail', ''), 140)}")

    def _line(self, text: str) -> None:
        line = text if self.tty else f"{stamp()} {text}"
        try:
            self.stream.write(fit(line, self.stream) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log must never stop a run (or its rollback)


def _short(text: Any, width: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[:width - 3] + "..."


def _seconds(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}s"
