"""A process's exit as the kernel reports it: a pidfd (Linux >= 5.3) becomes readable the
moment the whole thread group has exited, so a wait on it wakes at once and never polls.
Used by the process lifetimes of services and by the watched `--upgrade` child."""

from __future__ import annotations

import errno
import os
import select

GONE = object()  # open_pidfd: no such process


def open_pidfd(pid: int) -> int | object | None:
    """A pidfd for `pid`; GONE when no such process exists; None when pidfds are unavailable
    (not Linux, an old kernel, seccomp, no descriptor left): the caller polls instead."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(select, "poll"):
        return None
    try:
        return opener(pid, 0)
    except ProcessLookupError:
        return GONE
    except OSError as exc:
        return GONE if exc.errno == errno.ESRCH else None


def wait_exit(pidfd: int, timeout: float) -> bool:
    """Wait up to `timeout` s on `pidfd`; True once the process has exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    # poll() wakes when the last thread of the process has exited; EINTR is retried by Python.
    return bool(poller.poll(max(0, int(timeout * 1000 + 0.999))))
