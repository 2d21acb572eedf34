"""The file-system port: reads always real, changes through `Changes`.

Changes are durable: a copy or a rewrite goes to a temporary name in the same
folder, is fsynced, renamed into place, and the folder is fsynced, so a crash
leaves either the old file or the complete new one. Copies and new folders
take the mode and owner of their source (an index copied by root must stay
writable by the `orthanc` user).

Private roots (the state folder) hold patient data (index snapshots, config
backups): a folder made there is 0700 and a file copied there 0600, ours, whatever
the source's mode. A file copied back out of one takes the mode and owner of the
file it replaces (else of its new folder), so a restored index is Orthanc's again.
Owner and mode are left alone where they carry no meaning (Windows).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import StepError
from orchestrator.host.changes import Changes
from orchestrator.host.durable import (BUFFER, PRIVATE, TMP_SUFFIX, InFolder, copy_all,
                                       existing_parent, link_all, make_dir, precopy_all,
                                       remove_all, remove_empty_tree, rename, write_durable)
from orchestrator.paths import Overlap, is_inside, overlap


@dataclass(frozen=True)
class Mirrored:
    """What `Files.mirror` left: the files the new folder then mirrors, and the old folder's
    folder times read just before it was listed (see `Files.dir_mtimes`)."""

    rels: frozenset[str]  # relative paths linked in the new folder (the skipped names left out)
    linked: int  # how many of them this call linked
    mtimes: dict[str, int]
    taken: int


class Files:
    """Read and change files on this machine."""

    def __init__(self, changes: Changes):
        self.changes = changes
        self._made: set[Path] = set()  # dry run: files that would exist
        self._made_dirs: set[Path] = set()  # dry run: folders that would exist
        self._gone: set[Path] = set()  # dry run: paths that would be gone
        self.private: list[Path] = []  # folders whose contents are ours alone (0700/0600)

    def add_private_root(self, path: Path) -> None:
        """Keep everything made below `path` private: folders 0700, copied files 0600."""
        self.private.append(Path(path))

    # -- path judgments (on real paths: symlinks and `..` followed first) ----------
    def overlap(self, a: Path, b: Path) -> Overlap:
        """How folder `a` stands to folder `b` (apart, same, inside, contains)."""
        return overlap(a, b)

    def is_inside(self, child: Path, parent: Path) -> bool:
        """True when `child` is `parent` or below it, once both are resolved."""
        return is_inside(child, parent)

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
        return shutil.disk_usage(existing_parent(Path(path))).free

    def same_device(self, a: Path, b: Path) -> bool:
        """True when hard links from `a` to (a new path at) `b` are possible."""
        return os.stat(existing_parent(Path(a))).st_dev == os.stat(existing_parent(Path(b))).st_dev

    # -- changes -----------------------------------------------------------------
    def make_dir(self, path: Path, *, like: Path | None = None) -> None:
        """Create `path` (and missing parents), with the mode and owner of `like`."""
        p = Path(path)
        self.changes.apply(f"create folder {p}", make_dir, p,
                           PRIVATE if self._is_private(p) else like,
                           simulate=lambda: self._made_dirs.add(p))

    def copy(self, pairs: list[tuple[Path, Path]], label: str, *,
             digest: bool = True) -> dict[str, str]:
        """Copy files durably (mode and owner kept); return {dst: sha256 of the bytes copied}
        (each "" with `digest=False`: the caller knows the sources' digests already)."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        return self.changes.apply(label, copy_all, pairs, self._likes(pairs), digest, dry_result={},
                                  simulate=lambda: self._simulate_made(d for _, d in pairs))

    def precopy(self, pairs: list[tuple[Path, Path]], label: str) -> None:
        """Copy files next to their destinations (not durable, not in place) so that a later
        `copy` of the same pairs only writes what changed in between."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        self.changes.apply(label, precopy_all, pairs, self._likes(pairs), simulate=lambda: self._made.update(
            d.with_name(d.name + TMP_SUFFIX) for _, d in pairs))

    def link(self, pairs: list[tuple[Path, Path]], label: str) -> int:
        """Hard-link each source to its destination, creating parent folders like the source's."""
        pairs = [(Path(s), Path(d)) for s, d in pairs]
        return self.changes.apply(label, link_all, pairs, self._private_of(pairs),
                                  dry_result=len(pairs),
                                  simulate=lambda: self._simulate_made(d for _, d in pairs))

    def mirror(self, src: Path, dst: Path, *, skip: Iterable[str], depth: int,
               label: str) -> Mirrored | None:
        """Hard-link into `dst` every file of `src` not there yet (`skip`: names directly in
        `src` to leave out); return what `dst` then mirrors, with `src`'s folder times (to
        `depth`) read first, so that anything changed later shows in them.

        In a dry run nothing is listed (the cost would grow with the folder) and the result
        is None: what to link is only known when it is done.
        """
        s, d, names = Path(src), Path(dst), tuple(skip)

        def act() -> Mirrored:
            mtimes, taken = self.dir_mtimes(s, depth)
            source = set(self.walk(s, skip=names))
            there = set(self.walk(d, skip=names))
            rels = sorted(source - there)
            linked = link_all([(s / r, d / r) for r in rels],
                              self._private_of([(s, d)]) * len(rels), missing_ok=True)
            if linked < len(rels):  # deleted by the running service since it was listed
                source -= {r for r in rels if not os.path.lexists(d / r)}
            return Mirrored(frozenset(source | there), linked, mtimes, taken)

        return self.changes.apply(label, act, dry_result=None,
                                  simulate=lambda: self._made_dirs.add(d))

    def remove(self, paths: list[Path], label: str) -> None:
        """Remove files (those already gone are fine)."""
        paths = [Path(p) for p in paths]
        self.changes.apply(label, remove_all, paths,
                           simulate=lambda: self._gone.update(paths))

    def remove_empty_tree(self, path: Path, label: str) -> None:
        """Remove a folder tree that holds no files (folders, and our unfinished copies);
        refuse otherwise."""
        p = Path(path)
        self.changes.apply(label, remove_empty_tree, p, simulate=lambda: self._gone.add(p))

    def write(self, path: Path, data: bytes, label: str) -> None:
        """Replace a file's content atomically, keeping its mode and owner."""
        p = Path(path)
        like = p if p.exists() else (PRIVATE if self._is_private(p) else None)
        self.changes.apply(label, write_durable, p, data, like,
                           simulate=lambda: self._made.add(p))

    def rename(self, src: Path, dst: Path, label: str) -> None:
        """Rename `src` to `dst` (same file system), durably."""
        s, d = Path(src), Path(dst)
        self.changes.apply(label, rename, s, d,
                           simulate=lambda: self._simulate_rename(s, d))

    def _is_private(self, path: Path) -> bool:
        return any(path == r or r in path.parents for r in self.private)

    def _likes(self, pairs: list[tuple[Path, Path]]) -> list[Any]:
        """Whose mode and owner each copy takes: private into a private root; out of one,
        the file it replaces (else its folder's owner); otherwise its source."""
        out: list[Any] = []
        for src, dst in pairs:
            if self._is_private(dst):
                out.append(PRIVATE)
            elif self._is_private(src):
                out.append(dst if dst.exists() else InFolder(dst.parent))
            else:
                out.append(src)
        return out

    def _private_of(self, pairs: list[tuple[Path, Path]]) -> list[bool]:
        return [self._is_private(d) for _, d in pairs]

    def _simulate_rename(self, src: Path, dst: Path) -> None:
        (self._made_dirs if self.is_dir(src) else self._made).add(dst)
        self._gone.add(src)

    def _simulate_made(self, paths: Iterable[Path]) -> None:
        for p in paths:
            self._made.add(p)
            self._gone.discard(p)
