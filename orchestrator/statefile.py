"""Open the tool's own state files (locks, the journal) safely.

A state file is opened without following symlinks (O_NOFOLLOW where it exists, a look
first where it does not), only in a folder owned by us (or root) that no one else may
write, and must be a regular file of ours with a single link: a symlink or hard link
planted where a state file belongs is refused, naming it, instead of being written
through. New state folders are created 0700, new state files 0600.

A leaf module (it imports only `errors`): the journal and the locks use it.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from orchestrator.errors import InputError

# Windows: chosen by sys.platform as well as os.name, so a Windows-shaped Python on Linux
# (tests/faults/windows_shape) takes the same paths as the real one.
WINDOWS = sys.platform == "win32" or os.name == "nt"
OWNERS = hasattr(os, "geteuid")  # uid owners exist (POSIX)


class UnsafeStatePathError(InputError):
    """A state file or folder is a symlink, or sits where others could swap it."""


# -- opening state files safely -------------------------------------------------------

def make_state_dir(path: Path) -> Path:
    """Create a state folder (and its missing parents) private to us (0700); check it."""
    p = Path(path)
    missing = []
    q = p
    while not os.path.lexists(q) and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise InputError(f"cannot create the state folder {d}: {exc.strerror or exc}",
                             hint="run as root, or give a writable --state-dir") from exc
    check_state_dir(p)
    return p


def check_state_dir(path: Path) -> None:
    """Refuse a state folder that is a symlink, or that others own or may write."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except OSError as exc:
        raise InputError(f"cannot read the state folder {p}: {exc.strerror or exc}",
                         hint="give an existing, writable --state-dir") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStatePathError(f"the state folder {p} is a symlink (to {os.readlink(p)})",
                                   hint=f"give the real folder as --state-dir, or remove the "
                                        f"symlink {p}")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStatePathError(f"the state folder {p} is not a folder",
                                   hint="give a folder as --state-dir")
    if WINDOWS or not OWNERS:
        return  # owner and mode bits carry no meaning there (ACLs do)
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeStatePathError(f"the state folder {p} belongs to uid {st.st_uid}, not to us",
                                   hint=f"chown {os.geteuid()} {p}, or give another --state-dir")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeStatePathError(f"the state folder {p} is writable by others "
                                   f"(mode {stat.S_IMODE(st.st_mode):o})",
                                   hint=f"chmod 700 {p}")


def open_state_file(path: Path, flags: int, *, what: str = "state file") -> int:
    """Open (creating, mode 0600) one of our state files without following a symlink.

    The folder is created private (0700) when missing and checked; the file must be a
    regular file of ours with a single link. Raise UnsafeStatePathError naming the path.
    """
    p = Path(path)
    make_state_dir(p.parent)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow and os.path.islink(p):  # no O_NOFOLLOW (Windows): look first
        raise _symlink_error(p, what)
    try:
        fd = os.open(p, flags | nofollow | getattr(os, "O_BINARY", 0), 0o600)
    except OSError:
        if os.path.islink(p):  # ELOOP from O_NOFOLLOW
            raise _symlink_error(p, what) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStatePathError(f"the {what} {p} is not a regular file",
                                       hint=f"move {p} aside")
        if st.st_nlink > 1:  # a hard link to a file elsewhere: writing would change it
            raise UnsafeStatePathError(f"the {what} {p} has other hard links ({st.st_nlink})",
                                       hint=f"move {p} aside")
        if not WINDOWS and OWNERS and st.st_uid not in (0, os.geteuid()):
            raise UnsafeStatePathError(f"the {what} {p} belongs to uid {st.st_uid}, not to us",
                                       hint=f"move {p} aside")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _symlink_error(p: Path, what: str) -> UnsafeStatePathError:
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    return UnsafeStatePathError(f"the {what} {p} is a symlink (to {target}); refusing to "
                                "follow it", hint=f"remove the symlink {p}; the tool creates "
                                                  "the file itself")


def safe_name(name: str) -> str:
    """A name made safe as a file name (no separators, no leading dot or dash)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.@-]", "_", name).lstrip(".-")
    return cleaned or "service"
