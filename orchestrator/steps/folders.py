"""The new folder of a relocation: which attachments to link after staging, what is known of
its index already, and its removal.

Attachments are immutable, content-addressed files, so the new folder holds hard
links to the old folder's files; undo removes only those links (anything else
found there, e.g. an upgraded index, is moved aside for inspection instead).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

from orchestrator.host.files import Mirrored
from orchestrator.host.host import Host
from orchestrator.journal import StepState
from orchestrator.orthanc.index import attachment_paths
from orchestrator.steps.base import RunContext, done_after, latest
from orchestrator.steps.kind import StepKind

INDEX_NAMES = ("index", "index-wal", "index-shm")
LAYOUT_DEPTH = 2  # Orthanc stores attachments as root/xx/yy/uuid
RECENT_NS = 2_000_000_000  # folders changed this close to staging are looked into anyway
RECORDED = "staging recorded only"  # the stage's mark in a dry run: nothing was listed


class Target(Protocol):
    """What undo needs of a stage or relocate intent."""

    to: Path | None
    storage: Path | None
    created: bool


class Listing(threading.Thread):
    """The stopped index's attachment list, read in a thread beside the index copy (the
    query waits on SQLite, which lets the copy run)."""

    def __init__(self, index_dir: Path):
        super().__init__(daemon=True, name="attachment-listing")
        self.index_dir = index_dir
        self.result: set[str] | None = None

    def run(self) -> None:
        self.result = attachment_paths(self.index_dir)

    def get(self) -> set[str] | None:
        self.join()
        return self.result


def is_staged(ctx: RunContext, to: Path) -> bool:
    """True when this process staged `to` for real (what it linked is known)."""
    return isinstance(ctx.cache.get(("staged", str(to))), Mirrored)


def delta(host: Host, ctx: RunContext, storage: Path, to: Path,
          index: Path | Listing | None = None) -> tuple[list[str], list[str]]:
    """(files to link, links to drop) so that `to` mirrors `storage`'s attachments.

    After staging in this process the work does not grow with the archive:
    - the stopped index (`index`: its folder, or a Listing already reading it) lists its attachments in one query: what it lists
      and staging did not link is linked (if the file is there); what staging linked and
      the index no longer lists is dropped (if the file is gone from `storage`). Only the
      changes since staging are looked at on disk;
    - without a readable index, only the folders whose mtime changed since staging (or
      within RECENT_NS before it, for coarse timestamps) are listed.
    A staging that was only recorded (dry run) leaves nothing known to link. Otherwise
    (no staging in this process: a resume) both trees are walked.
    """
    staged = ctx.cache.get(("staged", str(to)))
    if staged is RECORDED:
        return [], []
    if not isinstance(staged, Mirrored):
        source = set(host.files.walk(storage, skip=INDEX_NAMES))
        target = set(host.files.walk(to, skip=INDEX_NAMES))
        return sorted(source - target), sorted(target - source)
    listed = index.get() if isinstance(index, Listing) else \
        attachment_paths(index) if index is not None else None
    if listed is not None:
        added = [r for r in listed - staged.rels if host.files.exists(storage / r)]
        gone = [r for r in staged.rels - listed if not host.files.exists(storage / r)]
        return sorted(added), sorted(gone)
    if any(r.count(os.sep) > LAYOUT_DEPTH for r in staged.rels):
        source = set(host.files.walk(storage, skip=INDEX_NAMES))
        target = set(host.files.walk(to, skip=INDEX_NAMES))
        return sorted(source - target), sorted(target - source)
    return _changed_folders(host, staged, storage, to)


def _changed_folders(host: Host, staged: Mirrored, storage: Path,
                     to: Path) -> tuple[list[str], list[str]]:
    then, taken = staged.mtimes, staged.taken
    now, _ = host.files.dir_mtimes(storage, LAYOUT_DEPTH)
    added, gone = [], []
    for d in set(now) | set(then):
        if now.get(d) == then.get(d) and then.get(d, 0) < taken - RECENT_NS:
            continue
        src, dst = host.files.list_files(storage / d), host.files.list_files(to / d)
        if not d:
            src, dst = src - set(INDEX_NAMES), dst - set(INDEX_NAMES)
        prefix = d + os.sep if d else ""
        added += [prefix + f for f in src - dst]
        gone += [prefix + f for f in dst - src]
    return sorted(added), sorted(gone)


def snapshot_digests(ctx: RunContext, index_dir: Path,
                      names: tuple[str, ...]) -> dict[str, str] | None:
    """The SHA-256 of each index file as the done snapshot read it, when that snapshot read
    these very files of the stopped service (no stop-service after it); else None.

    The service is stopped since, so the files are the same: the copy need not hash them
    again, and `verify` checks the new copy against the snapshot's reading.
    """
    rec = latest(ctx, StepKind.SNAPSHOT)
    if rec is None or not rec.facts or done_after(ctx, rec, StepKind.STOP_SERVICE) or \
            not any(r.kind == StepKind.STOP_SERVICE and r.state == StepState.DONE
                    for r in ctx.records.values()):
        return None
    digests = rec.facts.get("sha256")
    same_dir = rec.intent.get("index_dir") is not None and Path(rec.intent["index_dir"]) == index_dir
    if not same_dir or not isinstance(digests, dict) or set(digests) != set(names) or \
            not all(isinstance(v, str) and v for v in digests.values()):
        return None
    return dict(digests)


def estimate(ctx: RunContext) -> str:
    """' (about N instances' worth)' from preflight's counts (REST or index), else ''."""
    rec = latest(ctx, StepKind.PREFLIGHT)
    counts = (rec.facts or {}).get("counts") if rec is not None else None
    n = counts.get("instances") if isinstance(counts, dict) else None
    return f" (those of {n} instances, per preflight's counts)" if isinstance(n, int) else ""


def clear_target(host: Host, ctx: RunContext, intent: Target | None) -> str:
    """Remove our links from the new folder; if it holds anything else, move it aside instead."""
    if intent is None or intent.to is None or intent.storage is None \
            or not host.files.exists(intent.to):
        return "no new folder"
    to, storage = intent.to, intent.storage
    ours, other = [], 0
    for rel in host.files.walk(to):
        if host.files.same_file(to / rel, storage / rel):
            ours.append(to / rel)
        else:
            other += 1
    if other:
        aside = _aside(host, to, ctx.run_id)
        host.files.rename(to, aside, f"move {to} aside to {aside} ({other} files in it are not "
                                     "links to the old folder)")
        return f"{to} moved aside to {aside} (the upgraded index is kept for inspection)"
    if ours:
        host.files.remove(ours, f"remove {len(ours)} hard links from {to} (the originals stay)")
    if intent.created:
        host.files.remove_empty_tree(to, f"remove the emptied folder {to}")
        return f"{to} removed (it held only links)"
    return "links removed" if ours else "nothing to remove"


def _aside(host: Host, to: Path, run_id: str) -> Path:
    aside = to.with_name(f"{to.name}.rolled-back-{run_id}")
    n = 1
    while host.files.exists(aside):
        n += 1
        aside = to.with_name(f"{to.name}.rolled-back-{run_id}-{n}")
    return aside
