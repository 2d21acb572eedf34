"""Folder copies that keep everything: entries, bytes, modes, owners and symlinks.

`/etc/orthanc` must come back exactly as it was after a package change (dpkg
keeps a newer conffile on a downgrade; a leftover file makes Orthanc refuse a
key defined twice). `copy_tree` saves a folder, `restore_tree` makes the
target identical to the copy again (removing what the copy lacks) and checks
it, and `tree_differences` says how two folders differ. These functions act;
callers route them through `Changes`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError


class TreeError(OrchestratorError):
    """A folder could not be copied or restored exactly."""


@dataclass(frozen=True)
class TreeEntry:
    """One entry of a saved folder: a file, folder or symlink, with mode and owner."""

    rel: str
    kind: str  # "dir", "file", "link"
    mode: int
    uid: int
    gid: int
    target: str = ""  # symlink target


def tree(root: Path) -> dict[str, TreeEntry]:
    """Every entry under `root` (root itself as "."), keyed by relative path."""
    out: dict[str, TreeEntry] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == str(root) else [*dirnames, *filenames]:
            full = Path(dirpath) / name if name != "." else root
            st = full.lstat()
            kind = "link" if full.is_symlink() else "dir" if full.is_dir() else "file"
            rel = os.path.relpath(full, root)
            out[rel] = TreeEntry(rel, kind, st.st_mode & 0o7777, st.st_uid, st.st_gid,
                                 os.readlink(full) if kind == "link" else "")
    return out


def tree_differences(a: Path, b: Path) -> list[str]:
    """How folder `b` differs from `a` (entries, kinds, modes, owners, bytes); empty when equal."""
    ta, tb = tree(a), tree(b)
    diffs = [f"{rel}: only in {a}" for rel in sorted(ta.keys() - tb.keys())]
    diffs += [f"{rel}: only in {b}" for rel in sorted(tb.keys() - ta.keys())]
    for rel in sorted(ta.keys() & tb.keys()):
        ea, eb = ta[rel], tb[rel]
        if (ea.kind, ea.mode, ea.uid, ea.gid, ea.target) != (eb.kind, eb.mode, eb.uid, eb.gid,
                                                               eb.target):
            diffs.append(f"{rel}: {ea.kind} {ea.mode:o} {ea.uid}:{ea.gid} -> "
                         f"{eb.kind} {eb.mode:o} {eb.uid}:{eb.gid}")
        elif ea.kind == "file" and (Path(a) / rel).read_bytes() != (Path(b) / rel).read_bytes():
            diffs.append(f"{rel}: content differs")
    return diffs


def copy_tree(src: Path, dest: Path) -> None:
    if dest.exists():
        raise TreeError(f"{dest} already exists", hint="use a new folder for the copy")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _sync_tree(src, dest)


def restore_tree(saved: Path, target: Path) -> None:
    if not saved.is_dir():
        raise TreeError(f"no saved copy at {saved}", hint="restore the folder by hand")
    _sync_tree(saved, target)
    left = tree_differences(saved, target)
    if left:
        raise TreeError(f"{target} still differs from {saved}: {left[0]}",
                           hint="compare the two folders by hand")


def _sync_tree(src: Path, dest: Path) -> None:
    """Make `dest` an exact copy of `src`, removing whatever `src` does not have."""
    want = tree(src)
    have = tree(dest) if dest.exists() else {}
    for rel in sorted(have.keys() - want.keys(), reverse=True):  # children before parents
        p = dest / rel
        if have[rel].kind == "dir":
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for rel in sorted(want):  # parents before children
        e, s, d = want[rel], src / rel, dest / rel
        old = have.get(rel)
        if old is not None and old.kind != e.kind:
            shutil.rmtree(d) if old.kind == "dir" else d.unlink()
        if e.kind == "dir":
            d.mkdir(exist_ok=True)
        elif e.kind == "link":
            d.unlink(missing_ok=True)
            os.symlink(e.target, d)
        else:
            write_file_as(d, s.read_bytes(), e.mode, e.uid, e.gid)
        os.chown(d, e.uid, e.gid, follow_symlinks=False)
        if e.kind != "link":
            os.chmod(d, e.mode)


def write_file_as(path: Path, content: bytes, mode: int, uid: int, gid: int) -> None:
    """Write `content` to `path` atomically (a synced temporary file renamed over it) with
    exactly this mode and owner."""
    tmp = path.with_name(path.name + ".orchestrator-tmp")
    with open(tmp, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
