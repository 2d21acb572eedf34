"""The real file changes behind `Files`: durable copies, writes, links, renames, removals.

Each is a module function reached only through `Changes` (so a dry run never calls it).
A copy or a rewrite goes to a temporary name in the same folder, is fsynced, renamed into
place, and the folder is fsynced. What each new file or folder's mode and owner follow is
given by `like`: a path (its mode and owner), `PRIVATE` (ours, 0700/0600), or
`InFolder(folder)` (the folder's owner, its mode without execute bits). Owners are only
changed by root, and never on Windows, which also cannot open a folder to fsync it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import StepError

BUFFER = 1 << 20
BLOCK = 1 << 16  # compare-and-patch granularity when a pre-copy is brought up to date
SYNCFS_OVER = 64  # more new folders than this: one syncfs instead of an fsync per folder
TMP_SUFFIX = ".orchestrator-tmp"


def existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


class _Private:
    """The mode a private root gives what is made in it: ours, 0700 folders, 0600 files."""


PRIVATE = _Private()


@dataclass(frozen=True)
class InFolder:
    """A new file in `folder`: the folder's owner, its mode without execute bits."""

    folder: Path


def _same_owner(path: Path, like: Any) -> None:
    """Give `path` the mode and owner `like` stands for (a path, PRIVATE, InFolder)."""
    if like is None:
        return
    if isinstance(like, _Private):
        os.chmod(path, 0o700 if os.path.isdir(path) else 0o600)
        return
    folder = isinstance(like, InFolder)
    st = os.stat(like.folder if folder else like)
    mode = (st.st_mode & 0o666) if folder else (st.st_mode & 0o7777)
    os.chmod(path, mode)
    if not _CAN_CHOWN or os.geteuid() != 0:
        return  # only root can give a file away; Windows has no uid/gid
    now = os.stat(path)
    if (st.st_uid, st.st_gid) != (now.st_uid, now.st_gid):
        os.chown(path, st.st_uid, st.st_gid)


# Owners and POSIX modes carry no meaning on Windows (ACLs do), and it cannot open a folder
# to fsync it (NTFS makes the rename durable itself).
_WINDOWS = sys.platform == "win32" or os.name == "nt"
_CAN_CHOWN = not _WINDOWS and hasattr(os, "chown") and hasattr(os, "geteuid")
_CAN_SYNC_DIRS = not _WINDOWS


def make_dir(path: Path, like: Path | None) -> None:
    for d in _make_dirs(path, lambda _: like):
        fsync_dir(d.parent)


def _make_dirs(path: Path, like: Any) -> list[Path]:
    """Create `path` and its missing parents, each with the mode and owner of `like(folder)`;
    return the folders made."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        want = like(d)
        d.mkdir(0o777 if want is None else 0o700)  # private until it has its final mode
        _same_owner(d, want)
    return missing


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable (no-op on Windows)."""
    if not _CAN_SYNC_DIRS:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_all(pairs: list[tuple[Path, Path]], likes: list[Any], digest: bool = True) -> dict[str, str]:
    out = {}
    for (src, dst), like in zip(pairs, likes):
        out[str(dst)] = copy_durable(src, dst, like=like, digest=digest)
    return out


def copy_durable(src: Path, dst: Path, *, like: Any = None, digest: bool = True) -> str:
    """Copy `src` to `dst` through a fsynced temporary file; return the SHA-256 of the bytes
    copied ("" with `digest=False`, when the caller already knows the source's digest).

    A temporary file already there (a `precopy` made while the service still ran, or the
    remains of an interrupted copy) is brought up to date in place: only the blocks that
    differ are written. Either way every byte of `src` is read once, hashed as it is read
    and compared with (or written to) the copy, so the digest is that of what the copy
    holds; nothing re-reads the copy here (a read right after the write comes from the page
    cache and proves nothing about the disk: whoever uses the copy checks it then).
    The copy takes the mode and owner of `like` (default: of `src`).
    """
    tmp = dst.with_name(dst.name + TMP_SUFFIX)
    h = hashlib.sha256()
    try:
        seeded = tmp.exists()
        with open(src, "rb") as fin, open(tmp, "r+b" if seeded else "wb") as fout:
            pos = 0
            while chunk := fin.read(BLOCK if seeded else BUFFER):
                if digest:
                    h.update(chunk)
                if not seeded or fout.read(len(chunk)) != chunk:
                    fout.seek(pos)
                    fout.write(chunk)
                pos += len(chunk)
            fout.truncate(pos)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        _same_owner(tmp, src if like is None else like)
        os.replace(tmp, dst)
    except OSError as exc:
        _unlink_quiet(tmp)
        raise StepError(f"cannot copy {src} to {dst}: {exc.strerror or exc}",
                        hint="check free space and permissions") from exc
    fsync_dir(dst.parent)
    return h.hexdigest() if digest else ""


def precopy_all(pairs: list[tuple[Path, Path]], likes: list[Any]) -> None:
    """Copy each source next to its destination (the temporary name `copy_durable` brings up
    to date), and flush it to disk now: the service still runs, so the fsync of the later
    copy, after the stop, writes only the blocks changed in between, not the whole file."""
    for (src, dst), like in zip(pairs, likes):
        tmp = dst.with_name(dst.name + TMP_SUFFIX)
        if isinstance(like, _Private):  # private before the first byte lands
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(tmp, 0o600)
        shutil.copyfile(src, tmp)
        _same_owner(tmp, like)
        with open(tmp, "r+b") as f:  # a write handle: Windows fsyncs (commits) only those
            os.fsync(f.fileno())


def write_durable(path: Path, data: bytes, like: Any) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename), mode/owner of `like`."""
    tmp = path.with_name("." + path.name + TMP_SUFFIX)
    try:
        # Private from the first byte when it will end up with a chosen mode.
        mode = 0o666 if like is None else 0o600
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _same_owner(tmp, like)
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quiet(tmp)
        raise StepError(f"cannot write {path}: {exc.strerror or exc}",
                        hint="check free space and permissions") from exc
    fsync_dir(path.parent)


def link_all(pairs: list[tuple[Path, Path]], private: list[bool], missing_ok: bool = False) -> int:
    """Hard-link each pair; return how many links are there. `missing_ok`: a source gone
    since it was listed (the running service deleted it) is skipped, not an error."""
    linked = 0
    made_dirs: set[Path] = set()
    touched: set[Path] = set()
    for (src, dst), hidden in zip(pairs, private):
        parent = dst.parent
        if parent not in made_dirs and not parent.exists():
            # Each new folder like its counterpart in the source tree (same depth).
            depth = {d: s for d, s in zip(parent.parents, src.parent.parents)}
            depth[parent] = src.parent
            _make_dirs(parent, (lambda d: PRIVATE) if hidden else
                       (lambda d: depth[d] if depth.get(d) and depth[d].exists() else None))
        made_dirs.add(parent)
        try:
            os.link(src, dst)
        except FileExistsError:
            if not os.path.samefile(src, dst):
                raise StepError(f"cannot link {src}: {dst} exists and is another file",
                                hint=f"move {dst} aside") from None
        except FileNotFoundError as exc:
            if missing_ok and not os.path.lexists(src):
                continue
            raise StepError(f"cannot hard-link {src} to {dst}: {exc.strerror or exc}",
                            hint="hard links need the same file system, and a writable folder") from exc
        except OSError as exc:
            raise StepError(f"cannot hard-link {src} to {dst}: {exc.strerror or exc}",
                            hint="hard links need the same file system, and a writable folder") from exc
        linked += 1
        touched.add(parent)
    sync_dirs(touched)
    return linked


def sync_dirs(dirs: set[Path]) -> None:
    """Make new entries in `dirs` durable: fsync each, or one syncfs when there are many."""
    if not _CAN_SYNC_DIRS:
        return
    if len(dirs) > SYNCFS_OVER:
        fd = os.open(next(iter(dirs)), os.O_RDONLY)
        try:
            if _syncfs(fd):
                return
        finally:
            os.close(fd)
    for d in dirs:
        fsync_dir(d)


def _syncfs(fd: int) -> bool:
    """syncfs(2) on Linux (one call for the whole file system); False where unavailable."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).syncfs(fd) == 0  # the process's own libc
    except (OSError, AttributeError, TypeError):
        return False


def remove_all(paths: list[Path]) -> None:
    parents = set()
    for p in paths:
        try:
            p.unlink()
            parents.add(p.parent)
        except FileNotFoundError:
            pass
    for d in parents:
        fsync_dir(d)


def remove_empty_tree(root: Path) -> None:
    if not root.exists():
        return
    for dirpath, _, filenames in os.walk(root, topdown=False):
        for name in [f for f in filenames if f.endswith(TMP_SUFFIX)]:
            os.unlink(os.path.join(dirpath, name))  # our own unfinished copies
            filenames.remove(name)
        if filenames:
            raise StepError(f"cannot remove {root}: {dirpath} still holds files",
                            hint=f"move {root} aside by hand")
        os.rmdir(dirpath)
    fsync_dir(root.parent)


def rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass
