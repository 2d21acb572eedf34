"""Who holds dpkg's lock, asked of the kernel without taking it; a wait until nobody does.

apt and dpkg lock /var/lib/dpkg/lock-frontend (and dpkg /var/lib/dpkg/lock) with POSIX
write locks on the whole file. F_GETLK only asks: nothing is locked, and the kernel
names the holder as seen from this PID namespace.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Sequence
from pathlib import Path

DPKG_LOCKS = (Path("/var/lib/dpkg/lock-frontend"), Path("/var/lib/dpkg/lock"))
POLL = 0.5


def posix_lock_holder(path: Path) -> int | None:
    """The PID holding a POSIX (fcntl) lock anywhere on `path`, or None (no lock, no file, no
    fcntl). 0 or less when the kernel cannot name it (another PID namespace, an OFD lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no dpkg either
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqii", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0, 0)
        kind, _, _, _, pid, _ = struct.unpack("hhqqii", fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except OSError:
        return None
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else pid


def program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "a process"
    except OSError:
        return "a process"


def wait_unlocked(paths: Sequence[Path], deadline: float) -> int | None:
    """Wait until nobody holds a lock on `paths`; the holder's PID if one still does at
    `deadline` (time.monotonic)."""
    while True:
        holders = [pid for pid in map(posix_lock_holder, paths) if pid is not None]
        if not holders or time.monotonic() >= deadline:
            return holders[0] if holders else None
        time.sleep(POLL)
