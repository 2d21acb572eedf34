"""Credential files for the database command-line clients (pgpass, a MySQL option file):
in a private folder of their own, created 0600 from the start, removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

SECRET_PREFIX = "orchestrator-db-"


@contextmanager
def secret_folder(parent: Path | None = None) -> Iterator[Path]:
    """A private 0700 folder for credential files, removed afterwards whatever happens.

    Its name carries our PID: a run killed with SIGKILL (no `finally` runs) leaves its
    folder behind, and the next one removes every such folder whose process is gone.
    """
    parent = Path(parent or tempfile.gettempdir())
    sweep_secret_folders(parent)
    folder = Path(tempfile.mkdtemp(prefix=f"{SECRET_PREFIX}{os.getpid()}-", dir=parent))
    try:
        os.chmod(folder, 0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_secret_folders(parent: Path) -> list[Path]:
    """Remove the credential folders of our runs that died without removing them."""
    swept = []
    for folder in parent.glob(f"{SECRET_PREFIX}*-*"):
        pid = folder.name[len(SECRET_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or psutil.pid_exists(int(pid)) or not folder.is_dir() \
                or folder.is_symlink():
            continue
        if folder.stat().st_uid != os.getuid():
            continue  # another user's: not ours to remove
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder)
    return swept


def write_secret(path: Path, text: str) -> Path:
    """Create `path` with mode 0600 from the start (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path
