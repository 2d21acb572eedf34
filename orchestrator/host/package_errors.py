"""The package port's errors, and what a failed apt or dpkg run means: one class per thing the
operator does differently, classified from the run's own output (`host/apt_text.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.errors import Completed, OrchestratorError, RefusedError
from orchestrator.host import apt_text
from orchestrator.host.apt_text import AptFailure, PackageState


class PackageError(OrchestratorError):
    """apt or dpkg failed for a reason not listed below."""


class AptLockedError(RefusedError):
    """Another process holds apt's or dpkg's lock."""


class UnknownVersionError(RefusedError):
    """apt does not know the requested version; `known` lists what it knows."""

    def __init__(self, message: str, hint: str | None = None, *, known: Sequence[str] = (), **kw):
        super().__init__(message, hint, **kw)
        self.known = list(known)


class NoNetworkError(RefusedError):
    """apt could not fetch packages."""


class DiskFullError(RefusedError):
    """No room left for apt's downloads or dpkg's files."""


class HalfConfiguredError(PackageError):
    """dpkg left packages half-way (unpacked, half-configured, ...); `states` lists them."""

    def __init__(self, message: str, hint: str | None = None, *,
                 states: Sequence[PackageState] = (), **kw):
        super().__init__(message, hint, **kw)
        self.states = list(states)


class DebMissingError(RefusedError):
    """The .deb needed to go back to a version is neither cached nor downloadable."""


def apt_error(done: Completed, *, waited: float | None = None) -> OrchestratorError:
    """The error class for a failed apt or dpkg run, from its output (`waited`: the seconds
    it was allowed to wait for the lock)."""
    text = done.stdout + "\n" + done.stderr
    cmd = " ".join(done.argv[:2])
    kind = apt_text.classify_apt_failure(text)
    if kind is AptFailure.LOCKED:
        return lock_error(cmd, apt_text.lock_holder(text), waited, done)
    if kind is AptFailure.UNKNOWN_VERSION:
        missing = apt_text.missing_version(text)
        what = f"{missing[0]} {missing[1]}" if missing else done.tail(1)
        return UnknownVersionError(f"{cmd}: apt knows no {what}",
                                   hint="list the known versions with `apt-cache policy`",
                                   completed=done)
    if kind is AptFailure.DISK_FULL:
        return DiskFullError(f"{cmd}: no space left for apt ({done.tail(1)})",
                             hint="free space in /var/cache/apt/archives (`apt-get clean`) and /",
                             completed=done)
    if kind is AptFailure.NO_NETWORK:
        return NoNetworkError(f"{cmd}: cannot fetch packages ({done.tail(1)})",
                              hint="check the network and the apt sources, then retry",
                              completed=done)
    if kind is AptFailure.INTERRUPTED:
        return HalfConfiguredError(f"{cmd} failed half-way: {done.tail(1)}",
                                   hint="run the rollback, or `dpkg --configure -a` by hand",
                                   completed=done)
    return PackageError(f"{cmd} exited {done.returncode}: {done.tail(1)}",
                        hint="see apt's output", completed=done)


def lock_error(cmd: str, holder: tuple[int, str] | None, waited: float | None,
               done: Completed | None = None) -> AptLockedError:
    """One line: what could not get the lock, after how long, and who holds it."""
    after = f" still, after {waited:.0f} s," if waited else ""
    if holder is None or holder[0] <= 0:  # not said, or outside this PID namespace
        return AptLockedError(f"{cmd}: the apt/dpkg lock is{after} held by another process",
                              hint="wait for the other package manager to finish, then retry",
                              completed=done)
    return AptLockedError(f"{cmd}: the apt/dpkg lock is{after} held by "
                          f"{holder[1] or 'a process'} (pid {holder[0]})",
                          hint=f"let pid {holder[0]} finish (or end it), then retry",
                          completed=done)


def listing(states: Sequence[PackageState]) -> str:
    """NAME VERSION (abbrev) of each state, comma-separated."""
    return ", ".join(f"{s.name} {s.version} ({s.abbrev})" for s in states)
