"""Reading one file of an untrusted storage folder: no symlinks followed, sizes capped."""

from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO
from pathlib import Path

DEFAULT_MAX_SIZE = 1024 * 1024 * 1024  # largest instance read into memory (1 GiB)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class StorageFormatError(ValueError):
    """A storage file that cannot be what it claims (bad zlib, size mismatch, too large)."""


def open_regular(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> tuple[BinaryIO, int]:
    """Open a regular file without following a symlink: (file, size), refusing one above
    `max_size`. The caller closes the file."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise StorageFormatError(f"cannot open: {exc.strerror}") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise StorageFormatError("not a regular file")
    if st.st_size > max_size:
        f.close()
        raise StorageFormatError(f"{st.st_size} bytes, more than the limit of {max_size}")
    return f, st.st_size


def read_file(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Read a regular file without following a symlink, refusing one above `max_size`."""
    f, _ = open_regular(path, max_size)
    with f:
        data = f.read(max_size + 1)
    if len(data) > max_size:
        raise StorageFormatError(f"grew beyond the limit of {max_size} bytes while read")
    return data


def attachment_path(root: Path, uuid: str) -> Path:
    """Return `root/xx/yy/uuid`, refusing a UUID that is not one (no path tricks)."""
    if not UUID_RE.match(uuid):
        raise StorageFormatError(f"attachment UUID {uuid[:60]!r} is not a UUID")
    return root / uuid[0:2] / uuid[2:4] / uuid
