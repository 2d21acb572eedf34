"""Walk a storage folder in a stable order, never following links (for --no-index imports)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StorageEntry:
    """One thing met while walking a storage folder."""

    rel: str  # path relative to the root, with "/"
    path: Path
    problem: str | None = None  # set for what is skipped without reading (symlink, special file)


def walk(root: Path, after: str | None = None) -> Iterator[StorageEntry]:
    """Yield the files under `root` in a stable order (sorted names), never following links.

    `after`: resume after this relative path (as yielded earlier). Symlinks and
    special files are yielded with a `problem` and never opened.
    """
    after_parts = tuple(after.split("/")) if after else ()
    yield from _walk(root, (), after_parts)


def _walk(folder: Path, prefix: tuple[str, ...], after: tuple[str, ...],
          depth: int | None = None) -> Iterator[StorageEntry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield StorageEntry("/".join(prefix) or ".", folder, f"cannot list: {exc.strerror}")
        return
    for entry in entries:
        parts = prefix + (entry.name,)
        if after and parts < after[:len(parts)]:
            continue
        rel = "/".join(parts)
        try:
            if entry.is_symlink():
                yield StorageEntry(rel, Path(entry.path), "a symbolic link (not followed)")
            elif entry.is_dir(follow_symlinks=False):
                if depth == 0:
                    continue
                deeper = after if after and parts == after[:len(parts)] else ()
                yield from _walk(Path(entry.path), parts, deeper,
                                 None if depth is None else depth - 1)
            elif entry.is_file(follow_symlinks=False):
                if after and parts <= after:
                    continue
                yield StorageEntry(rel, Path(entry.path))
            else:
                yield StorageEntry(rel, Path(entry.path), "not a regular file")
        except OSError as exc:
            yield StorageEntry(rel, Path(entry.path), f"cannot stat: {exc.strerror}")


def walk_top(root: Path) -> Iterator[StorageEntry]:
    """Yield what stands directly in `root` besides folders (the index files, strays)."""
    for entry in _walk(root, (), (), depth=0):
        yield entry
