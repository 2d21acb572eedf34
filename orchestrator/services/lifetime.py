"""The life of one recorded process: wait for its end, and say whether it has ended.

A process is named by its PID *and* its start time (psutil's `create_time`), so a
PID the kernel has since given to another program is never mistaken for it.

"Gone" means the kernel has finished the process: it is a zombie waiting for its
parent, or reaped, or its PID now belongs to a process started at another time.
While Orthanc exits, its command line is already empty and its index unlocked a
few milliseconds before it becomes a zombie, so a scan of the process table can
call it gone while it still runs; the answer here cannot. Where the kernel offers
a pidfd (Linux >= 5.3) it becomes readable exactly when the whole thread group
has exited, so a wait wakes at once and never polls, and once an answer is
"gone" every later answer for the same process is "gone" too. Elsewhere, psutil
is polled (zombie = gone), or on Windows waited on through its handle.

Nothing here reaps a child: a caller that owns a `Popen` still gets its exit status.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

from orchestrator.host.pidfd import GONE, open_pidfd, wait_exit

SAME_START = 0.05  # seconds: two create_time readings of one process differ by less
FALLBACK_POLL_MAX = 0.02  # seconds between looks where no pidfd exists (after a fast start)


@dataclass(frozen=True)
class Recorded:
    """A process as recorded before a change: its PID and when it started (epoch seconds)."""

    pid: int
    started_at: float | None

    def describe(self) -> str:
        return f"PID {self.pid}"


def started_at(pid: int | None) -> float | None:
    """When process `pid` started (epoch seconds), or None if it is gone or unreadable."""
    if not pid:
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def record(pid: int | None) -> Recorded | None:
    """Record process `pid` as it is now (None when there is no such process)."""
    when = started_at(pid)
    return Recorded(pid, when) if pid and when is not None else None


def is_gone(pid: int | None, started: float | None) -> bool:
    """True when the process `pid` started at `started` has exited (zombie or reaped).

    Does not wait. With `started` None any process holding the PID counts as it.
    """
    return wait_gone(pid, started, 0.0)


def wait_gone(pid: int | None, started: float | None, timeout: float) -> bool:
    """Wait up to `timeout` seconds for that process to exit; True once it has, False if not."""
    if not pid or pid <= 0:
        return True
    pidfd = open_pidfd(pid)
    if pidfd is GONE:
        return True
    try:
        # The pidfd (when we got one) pins the process: if the PID is still the recorded
        # process now, the pidfd refers to it and not to a later owner of the number.
        if not _same_process(pid, started):
            return True
        if pidfd is not None:
            return wait_exit(pidfd, timeout)
        return _wait_without_pidfd(pid, started, timeout)
    finally:
        if isinstance(pidfd, int):
            os.close(pidfd)


def _same_process(pid: int, started: float | None) -> bool:
    """True when `pid` exists (alive or zombie) and started at `started`."""
    try:
        when = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # unreadable (access denied): assume it is the same process
    return started is None or abs(when - started) <= SAME_START


def _wait_without_pidfd(pid: int, started: float | None, timeout: float) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    if os.name == "nt":  # no zombies; psutil waits on the process handle
        try:
            proc.wait(max(timeout, 0.0))
            return True
        except psutil.TimeoutExpired:
            return False
        except psutil.NoSuchProcess:
            return True
    # psutil's own wait treats a zombie of another parent as alive: poll its state instead.
    deadline = time.monotonic() + max(timeout, 0.0)
    interval = 0.001
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or not _same_process(pid, started):
                return True
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(interval, left))
        interval = min(interval * 2, FALLBACK_POLL_MAX)
