"""Judge paths by where they really lead, and read input files that cannot hang.

Every check of "is this folder inside that one" resolves both paths first (symlinks and
`..` followed), so a symlinked `StorageDirectory` or a `relocate.to` written with `..`
is judged by where it really leads. Plans and Orthanc configurations are read through
`read_regular_file`, which refuses a FIFO, a device or a folder at once instead of
blocking on it.

A leaf module (it imports only `errors`): the plan loader, the config reader and the
steps may all use it.
"""

from __future__ import annotations

import os
import stat
import sys
from enum import Enum
from pathlib import Path

from orchestrator.errors import InputError


class Overlap(str, Enum):
    """How two folders stand to each other, once resolved (closed set)."""

    APART = "apart"
    SAME = "same"
    INSIDE = "inside"  # the first is inside the second
    CONTAINS = "contains"  # the first is a parent of the second


def real(path: str | os.PathLike) -> Path:
    """The absolute path with every symlink and `..` resolved, existing or not."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def overlap(a: str | os.PathLike, b: str | os.PathLike) -> Overlap:
    """How folder `a` stands to folder `b`, judged on their real paths."""
    ra, rb = real(a), real(b)
    if ra == rb or _same_node(ra, rb):
        return Overlap.SAME
    if rb in ra.parents:
        return Overlap.INSIDE
    if ra in rb.parents:
        return Overlap.CONTAINS
    return Overlap.APART


def is_inside(child: str | os.PathLike, parent: str | os.PathLike) -> bool:
    """True when `child` is `parent` itself or anywhere below it, on real paths."""
    return overlap(child, parent) in (Overlap.SAME, Overlap.INSIDE)


def refuse_overlap(new: str | os.PathLike, old: str | os.PathLike, *, what: str,
                   place: str = "") -> None:
    """Raise InputError unless folder `new` is apart from `old` (not equal, inside, or a
    parent of it), naming both real paths. `what` names `new` ("relocate.to"), `place`
    the key path or file where it was given."""
    rel = overlap(new, old)
    if rel is Overlap.APART:
        return
    words = {Overlap.SAME: "is the same folder as", Overlap.INSIDE: "is inside",
             Overlap.CONTAINS: "is a parent of"}[rel]
    at = f"{place}: " if place else ""
    raise InputError(f"{at}{what} {new} (really {real(new)}) {words} {old} (really {real(old)})",
                     hint=f"choose a {what} outside {real(old)} that does not contain it")


def open_to_others(folder: str | os.PathLike) -> Path | None:
    """The first folder (from `folder`'s real path up) whose mode lets every local user in,
    when nothing above it shuts them out; None when some folder on the way is closed to
    others (no o+x), or where modes carry no meaning (Windows). For `inspect`: patient
    data under a folder open to others is readable wherever its files' modes allow."""
    if sys.platform == "win32" or os.name != "posix":
        return None
    target = real(folder)
    chain = [*reversed(target.parents), target]
    try:
        modes = [os.stat(p).st_mode for p in chain]
    except OSError:
        return None
    if not all(m & stat.S_IXOTH for m in modes[:-1]):
        return None
    if modes[-1] & (stat.S_IROTH | stat.S_IXOTH):
        return target
    return None


def _same_node(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def read_regular_file(path: str | os.PathLike, limit: int, *, what: str = "file") -> bytes:
    """Read at most `limit` bytes of a regular file; refuse anything else at once.

    Opened non-blocking (a FIFO opens without waiting for a writer) and checked with
    fstat on the opened file, so what is read is what was checked. Raise InputError
    naming the path: not a regular file, larger than `limit`, or unreadable.
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not hasattr(os, "O_NONBLOCK"):  # Windows: no FIFOs to block on; look before opening
        mode = _mode_before_open(p)
        if mode is not None and not stat.S_ISREG(mode):
            raise _not_regular(p, what, _kind(mode))
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise InputError(f"{p}: cannot read the {what}: {exc.strerror or exc}",
                         hint="check the path and its permissions") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _not_regular(p, what, _kind(st.st_mode))
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise InputError(f"{p}: the {what} is {st.st_size} bytes, more than {limit}",
                             hint=f"give the {what} itself, not a larger file")
        try:
            data = f.read(limit + 1)  # bounded even if the file grows meanwhile
        except OSError as exc:
            raise InputError(f"{p}: cannot read the {what}: {exc.strerror or exc}",
                             hint="check the file") from exc
    if len(data) > limit:
        raise InputError(f"{p}: the {what} is more than {limit} bytes",
                         hint=f"give the {what} itself, not a larger file")
    return data


def _mode_before_open(p: str) -> int | None:
    try:
        return os.stat(p).st_mode
    except OSError:
        return None  # let the open report it


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"is {name}"
    return "is not a regular file"


def _not_regular(p: str, what: str, kind: str) -> InputError:
    return InputError(f"{p}: {kind}; the {what} must be a regular file",
                      hint=f"give the path of the {what} itself")
