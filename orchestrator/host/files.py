"""The file-system port: reads always real, changes through `Changes`.

Changes are durable: a copy or a rewrite goes to a temporary name in the same
folder, is fsynced, renamed into place, and the folder is fsynced, so a crash
leaves either the old file or the complete new one. Copies and new folders
take the mode and owner of their source (an index copied by root must stay
writable by the `orthanc` user).

In a dry run the port remembers what it would have created or removed, so a
later read (is the index there yet? which links are missing?) sees the state
the earlier changes would have left.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.errors import StepError
from orchestrator.host.changes import Changes

BUFFER = 1 << 20
BLOCK = 1 << 16  # compare-and-patch granularity when a pre-copy is brought up to date
SYNCFS_OVER = 64  # more new folders than this: one syncfs instead of an fsync per folder
TMP_SUFFIX = ".orchestrator-tmp"


class Files:
    """Read and change files on this machine."""

    def __init__(self, changes: Changes):
        self.changes = changes
        self._made: set[Path] = set()  # dry run: files that would exist
        self._made_dirs: set[Path] = set()  # dry run: folders that would exist
        self._gone: set[Path] = set()  # dry run: paths that would be gone

    # -- reads -------------------------------------------------------------------
    def exists(self, path: Path) -> bool:
        p = Path(path)
        if p in self._gone:
            return False
        return p in self._made or p in self._made_dirs or os.path.lexists(p)

    def is_dir(self, path: Path) -> bool:
        p = Path(path)
        return p not in self._gone and (p in self._made_dirs or p.is_dir())

    def is_empty_dir(self, path: Path) -> bool:
        """True for a folder with nothing in it (a folder that would be created counts)."""
        p = Path(path)
        if any(p in m.parents for m in self._made):
            return False
        if p in self._made_dirs and not p.exists():
            return True
        try:
            return not any(os.scandir(p))
        except OSError:
            return False

    def read_bytes(self, path: Path) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise StepError(f"cannot read {path}: {exc.strerror or exc}",
                            hint="check that the file exists and is readable") from exc

    def size(self, path: Path) -> int:
        return Path(path).stat().st_size

    def sha256(self, path: Path) -> str:
        """The SHA-256 of a file's content, hex."""
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(BUFFER):
                h.update(chunk)
        return h.hexdigest()

    def walk(self, root: Path, *, skip: Iterable[str] = ()) -> list[str]:
        """Relative paths ('ab/cd/uuid') of the regular files under `root`, sorted.

        `skip` names files directly in `root` to leave out (the index files).
        """
        skipped = set(skip)
        found: list[str] = []
        stack = [("", os.fspath(root))]
        while stack:
            rel_dir, path = stack.pop()
            try:
                entries = os.scandir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for e in entries:
                    if e.name.endswith(TMP_SUFFIX):
                        continue
                    rel = rel_dir + os.sep + e.name if rel_dir else e.name
                    if e.is_dir(follow_symlinks=False):
                        stack.append((rel, e.path))
                    elif e.is_file(follow_symlinks=False) and (rel_dir or e.name not in skipped):
                        found.append(rel)
        if self._made or self._gone:
            found = self._overlay(Path(root), found, lambda rel: "/" not in rel.replace(os.sep, "/")
                                  and rel in skipped)
        return sorted(found)

    def list_files(self, folder: Path) -> set[str]:
        """Names of the regular files directly in `folder` (none when it does not exist)."""
        try:
            with os.scandir(folder) as entries:
                names = {e.name for e in entries if e.is_file(follow_symlinks=False)
                         and not e.name.endswith(TMP_SUFFIX)}
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        if self._made or self._gone:
            names = set(self._overlay(Path(folder), list(names), lambda rel: os.sep in rel))
        return names

    def dir_mtimes(self, root: Path, depth: int = 2) -> tuple[dict[str, int], int]:
        """Modification times (ns) of `root` and its folders down to `depth`, keyed by relative
        path ("" for root), and the wall time (ns) just before they were read.

        A folder's mtime changes when a file is added to or removed from it, so comparing two
        such maps finds the folders to look into without listing every file.
        """
        taken = time.time_ns()
        out: dict[str, int] = {}
        level = [("", os.fspath(root))]
        for n in range(depth + 1):
            below = []
            for rel, path in level:
                try:
                    out[rel] = os.stat(path).st_mtime_ns
                    if n < depth:
                        with os.scandir(path) as entries:
                            below += [(rel + os.sep + e.name if rel else e.name, e.path)
                                      for e in entries if e.is_dir(follow_symlinks=False)]
                except (FileNotFoundError, NotADirectoryError):
                    continue
            level = below
        return out, taken

    def _overlay(self, root: Path, found: list[str], skip: Any) -> list[str]:
        """Dry run: add the files that would exist under `root`, drop those that would be gone."""
        out = {rel for rel in found if root / rel not in self._gone}
        for p in self._made:
            try:
                rel = str(p.relative_to(root))
            except ValueError:
                continue
            if not skip(rel) and not rel.endswith(TMP_SUFFIX):
                out.add(rel)
        return sorted(out)

    def same_file(self, a: Path, b: Path) -> bool:
        """True when both paths name the same file (a hard link)."""
        try:
            return os.path.samefile(a, b)
        except OSError:
            return False

    def free_bytes(self, path: Path) -> int:
        """Free space for an unprivileged writer on the file system holding `path`."""
        st = os.statvfs(_existing_parent(Path(path)))
        return st.f_bavail * st.f_frsize

    def same_device(self, a: Path, b: Path) -> bool:
        """True when hard links from `a` to (a new path at) `b` are possible."""
        return os.stat(_existing_parent(Path(a))).st_dev == os.stat(_existing_parent(Path(b))).st_dev

    # -- changes -----------------------------------------------------------------
    def make_dir(self, path: Path, *, like: Path | None = None) -> None:
        """Create `path` (and missing parents), with the mode and owner of `like`."""
        p = Path(path)
        self.changes.apply(f"create folder {p}", _make_dir, p, like,
                           simulate=lambda: self._made_dirs.add(p))

    def copy(self, pairs: list[tuple[Path, Path]], label: str) -> dict[str, str]:
        """Copy files durably (mode and owner kept); return {dst: sha256 of the bytes copied}."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        return self.changes.apply(label, _copy_all, pairs, dry_result={},
                                  simulate=lambda: self._simulate_made(d for _, d in pairs))

    def precopy(self, pairs: list[tuple[Path, Path]], label: str) -> None:
        """Copy files next to their destinations (not durable, not in place) so that a later
        `copy` of the same pairs only writes what changed in between."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        self.changes.apply(label, _precopy_all, pairs, simulate=lambda: self._made.update(
            d.with_name(d.name + TMP_SUFFIX) for _, d in pairs))

    def link(self, pairs: list[tuple[Path, Path]], label: str) -> int:
        """Hard-link each source to its destination, creating parent folders like the source's."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        return self.changes.apply(label, _link_all, pairs, dry_result=len(pairs),
                                  simulate=lambda: self._simulate_made(d for _, d in pairs))

    def remove(self, paths: list[Path], label: str) -> None:
        """Remove files (those already gone are fine)."""
        paths = [Path(p) for p in paths]
        self.changes.apply(label, _remove_all, paths,
                           simulate=lambda: self._gone.update(paths))

    def remove_empty_tree(self, path: Path, label: str) -> None:
        """Remove a folder tree that holds no files (folders, and our unfinished copies);
        refuse otherwise."""
        p = Path(path)
        self.changes.apply(label, _remove_empty_tree, p, simulate=lambda: self._gone.add(p))

    def write(self, path: Path, data: bytes, label: str) -> None:
        """Replace a file's content atomically, keeping its mode and owner."""
        p = Path(path)
        self.changes.apply(label, write_durable, p, data, p if p.exists() else None,
                           simulate=lambda: self._made.add(p))

    def rename(self, src: Path, dst: Path, label: str) -> None:
        """Rename `src` to `dst` (same file system), durably."""
        s, d = Path(src), Path(dst)
        self.changes.apply(label, _rename, s, d,
                           simulate=lambda: self._simulate_rename(s, d))

    def _simulate_rename(self, src: Path, dst: Path) -> None:
        (self._made_dirs if self.is_dir(src) else self._made).add(dst)
        self._gone.add(src)

    def _simulate_made(self, paths: Iterable[Path]) -> None:
        for p in paths:
            self._made.add(p)
            self._gone.discard(p)


# -- the real actions (module functions, so they are only reached through Changes) -------

def _existing_parent(p: Path) -> Path:
    p = p.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _same_owner(path: Path, like: Path | None) -> None:
    if like is None:
        return
    st = os.stat(like)
    os.chmod(path, st.st_mode & 0o7777)
    if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (os.stat(path).st_uid, os.stat(path).st_gid):
        os.chown(path, st.st_uid, st.st_gid)


def _make_dir(path: Path, like: Path | None) -> None:
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
        d.mkdir()
        _same_owner(d, like(d))
    return missing


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_all(pairs: list[tuple[Path, Path]]) -> dict[str, str]:
    out = {}
    for src, dst in pairs:
        out[str(dst)] = copy_durable(src, dst)
    return out


def copy_durable(src: Path, dst: Path) -> str:
    """Copy `src` to `dst` through a fsynced temporary file; return the SHA-256 copied.

    A temporary file already there (a `precopy` made while the service still ran, or the
    remains of an interrupted copy) is brought up to date in place: only the blocks that
    differ are written. Either way every byte of `src` is read, hashed and compared.
    """
    tmp = dst.with_name(dst.name + TMP_SUFFIX)
    h = hashlib.sha256()
    try:
        seeded = tmp.exists()
        with open(src, "rb") as fin, open(tmp, "r+b" if seeded else "wb") as fout:
            pos = 0
            while chunk := fin.read(BLOCK if seeded else BUFFER):
                h.update(chunk)
                if not seeded or fout.read(len(chunk)) != chunk:
                    fout.seek(pos)
                    fout.write(chunk)
                pos += len(chunk)
            fout.truncate(pos)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        _same_owner(tmp, src)
        os.replace(tmp, dst)
    except OSError as exc:
        _unlink_quiet(tmp)
        raise StepError(f"cannot copy {src} to {dst}: {exc.strerror or exc}",
                        hint="check free space and permissions") from exc
    fsync_dir(dst.parent)
    return h.hexdigest()


def _precopy_all(pairs: list[tuple[Path, Path]]) -> None:
    for src, dst in pairs:
        tmp = dst.with_name(dst.name + TMP_SUFFIX)
        shutil.copyfile(src, tmp)
        _same_owner(tmp, src)


def write_durable(path: Path, data: bytes, like: Path | None) -> None:
    """Write `data` to `path` atomically (temp file, fsync, rename), mode/owner of `like`."""
    tmp = path.with_name("." + path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
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


def _link_all(pairs: list[tuple[Path, Path]]) -> int:
    made_dirs: set[Path] = set()
    touched: set[Path] = set()
    for src, dst in pairs:
        parent = dst.parent
        if parent not in made_dirs and not parent.exists():
            # Each new folder like its counterpart in the source tree (same depth).
            depth = {d: s for d, s in zip(parent.parents, src.parent.parents)}
            depth[parent] = src.parent
            _make_dirs(parent, lambda d: depth[d] if depth.get(d) and depth[d].exists() else None)
        made_dirs.add(parent)
        try:
            os.link(src, dst)
        except FileExistsError:
            if not os.path.samefile(src, dst):
                raise StepError(f"cannot link {src}: {dst} exists and is another file",
                                hint=f"move {dst} aside") from None
        except OSError as exc:
            raise StepError(f"cannot hard-link {src} to {dst}: {exc.strerror or exc}",
                            hint="hard links need the same file system, and a writable folder") from exc
        touched.add(parent)
    sync_dirs(touched)
    return len(pairs)


def sync_dirs(dirs: set[Path]) -> None:
    """Make new entries in `dirs` durable: fsync each, or one syncfs when there are many."""
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


def _remove_all(paths: list[Path]) -> None:
    parents = set()
    for p in paths:
        try:
            p.unlink()
            parents.add(p.parent)
        except FileNotFoundError:
            pass
    for d in parents:
        fsync_dir(d)


def _remove_empty_tree(root: Path) -> None:
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


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def _unlink_quiet(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass
