"""build a new database folder (Debian's db-vN layout) and point the config at it.

The new folder gets a durable copy of the SQLite index and hard links to the
attachments (immutable, content-addressed files: a link is safe and costs no
space). The old folder is never written: it stays the rollback point, and
undo is a pointer switch (the config file back, byte for byte).

So that downtime does not grow with the archive, `stage-links` (inserted
before the stop by `steps.build`) links every attachment and pre-copies the
index while the service still runs; after the stop, relocate links only the
files added since, drops links to files deleted since, and writes only the
index blocks that changed.

The config file that sets StorageDirectory/IndexDirectory is rewritten in
place with the formatting and comments kept (`set_string_value`), through a
temporary file and a rename, with its mode and owner; a byte-exact backup goes
to the run's folder first.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, StepError
from orchestrator.journal import StepRecord
from orchestrator.steps.base import RunContext, StepBase, service_config

INDEX_NAMES = ("index", "index-wal", "index-shm")
KEYS = ("StorageDirectory", "IndexDirectory")
LAYOUT_DEPTH = 2  # Orthanc stores attachments as root/xx/yy/uuid
RECENT_NS = 2_000_000_000  # folders changed this close to staging are looked into anyway


def sources(ctx: RunContext, options: dict) -> tuple[Path, Path]:
    """(storage folder, index folder) to relocate from: `from`, else the config's."""
    if options.get("from"):
        src = Path(options["from"])
        return src, src
    config = service_config(ctx)
    return Path(config.storage_dir), Path(config.index_dir)


def _check_target(host: Any, ctx: RunContext, options: dict, *, staged_by: str | None) -> Path:
    to = Path(options["to"])
    storage, index_dir = sources(ctx, options)
    if to in (storage, index_dir) or storage in to.parents or to in storage.parents:
        raise InputError(f"{to} overlaps the current folder {storage}",
                         hint="choose a new sibling folder, e.g. /var/lib/orthanc/db-v7")
    staged = staged_by is not None and ctx.records.get(staged_by) is not None and \
        ctx.records[staged_by].state.touched
    if host.files.exists(to) and not staged and not host.files.is_empty_dir(to):
        raise InputError(f"{to} exists and is not empty",
                         hint="relocate builds a new folder: give a new path, or move that one aside")
    if not host.files.exists(storage):
        raise InputError(f"the source folder {storage} does not exist",
                         hint="check relocate.from or StorageDirectory")
    if not host.files.same_device(storage, to):
        raise InputError(f"{to} is not on the file system of {storage}: attachments "
                         "cannot be hard-linked", hint="choose a folder on the same file system")
    return to


class StageLinks(StepBase):
    """Hard-link the attachments into the new folder while the service still runs."""

    kind = "stage-links"

    def describe(self) -> str:
        return f"pre-stage hard links of the attachments in {self.options['to']} (before the stop)"

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        _check_target(host, ctx, self.options, staged_by=None)
        return []

    def intend(self, host: Any, ctx: RunContext) -> dict:
        storage, index_dir = sources(ctx, self.options)
        to = Path(self.options["to"])
        return {"to": str(to), "storage": str(storage), "index_dir": str(index_dir),
                "created": not host.files.exists(to)}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        to, storage, index_dir = Path(intent["to"]), Path(intent["storage"]), Path(intent["index_dir"])
        # Folder times first: whatever changes from now on shows in them (see `delta`).
        mtimes, taken = host.files.dir_mtimes(storage, LAYOUT_DEPTH)
        if not host.files.exists(to):
            host.files.make_dir(to, like=storage)
        source = host.files.walk(storage, skip=INDEX_NAMES)
        rels = sorted(set(source) - set(host.files.walk(to)))
        shallow = all(r.count(os.sep) <= LAYOUT_DEPTH for r in source)
        ctx.cache[("staged", str(to))] = (mtimes, taken) if shallow else None
        if rels:
            host.files.link([(storage / r, to / r) for r in rels],
                            f"hard-link {len(rels)} attachments of {storage} into {to}")
        if host.files.exists(index_dir / "index"):
            host.files.precopy([(index_dir / "index", to / "index")],
                               f"pre-copy the SQLite index of {index_dir} into {to} "
                               "(brought up to date after the stop)")
        return {"linked": len(rels), "summary": f"{len(rels)} attachments linked into {to}, "
                                                "index pre-copied"}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        return clear_target(host, ctx, record.intent)

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        return None if host.files.is_dir(Path(record.intent["to"])) else "the new folder is gone"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return f"remove {record.intent.get('to')} (it holds only hard links; the originals stay)"


class Relocate(StepBase):
    kind = "relocate"

    def describe(self) -> str:
        src = f" from {self.options['from']}" if self.options.get("from") else ""
        return f"copy the index{src} into {self.options['to']}, link the attachments, point the config there"

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        from orchestrator.orthanc.config import set_string_value

        to = _check_target(host, ctx, self.options, staged_by=f"{self.id}-stage")
        for path, keys in self._edits(ctx).items():
            text = host.files.read_bytes(path).decode("utf-8", errors="surrogateescape")
            for key in keys:  # the rewrite must work before anything stops
                try:
                    set_string_value(text, key, str(to))
                except InputError as exc:
                    raise InputError(f"{path}: {exc.message}", hint=exc.hint) from None
        return []

    def _edits(self, ctx: RunContext) -> dict[Path, list[str]]:
        """Config file -> the keys to rewrite in it (IndexDirectory only where it is set)."""
        config = service_config(ctx)
        forced = Path(self.options["config_file"]) if self.options.get("config_file") else None
        edits: dict[Path, list[str]] = {}
        for key in KEYS:
            defined = config.file_defining(key)
            if defined is None and key == "IndexDirectory":
                continue  # it follows StorageDirectory
            where = forced or defined
            if where is None:
                raise InputError("no config file sets StorageDirectory",
                                 hint="add \"StorageDirectory\" to the config, or name the file "
                                      "with relocate.config_file")
            if defined is not None and Path(defined) != where:
                raise InputError(f"{key} is set in {defined}, not in {where}",
                                 hint="drop relocate.config_file, or move the key into that file")
            edits.setdefault(where, []).append(key)
        return edits

    def intend(self, host: Any, ctx: RunContext) -> dict:
        storage, index_dir = sources(ctx, self.options)
        to = Path(self.options["to"])
        if not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}",
                            hint="check relocate.from or IndexDirectory")
        backups = Path(ctx.run_dir) / "config-backup"
        edits = [{"file": str(f), "keys": keys, "backup": str(backups / f"{n}-{f.name}")}
                 for n, (f, keys) in enumerate(sorted(self._edits(ctx).items()))]
        return {"to": str(to), "storage": str(storage), "index_dir": str(index_dir),
                "index_files": [n for n in INDEX_NAMES if host.files.exists(index_dir / n)],
                "created": not host.files.exists(to), "edits": edits}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        from orchestrator.orthanc.config import set_string_value

        to, storage, index_dir = Path(intent["to"]), Path(intent["storage"]), Path(intent["index_dir"])
        if not host.files.exists(to):
            host.files.make_dir(to, like=storage)
        copied = host.files.copy([(index_dir / n, to / n) for n in intent["index_files"]],
                                 f"copy the SQLite index of {index_dir} into {to}")
        added, gone = delta(host, ctx, storage, to)
        if added:
            host.files.link([(storage / r, to / r) for r in added],
                            f"hard-link {len(added)} attachments of {storage} into {to}")
        if gone:
            host.files.remove([to / r for r in gone],
                              f"unlink {len(gone)} attachments deleted from {storage} since staging")
        configs = []
        for edit in intent["edits"]:
            path, backup = Path(edit["file"]), Path(edit["backup"])
            original = host.files.read_bytes(path)
            text = original.decode("utf-8", errors="surrogateescape")
            for key in edit["keys"]:
                text = set_string_value(text, key, str(to))
            new = text.encode("utf-8", errors="surrogateescape")
            if not host.files.exists(backup.parent):
                host.files.make_dir(backup.parent)
            host.files.copy([(path, backup)], f"back up {path} to {backup}")
            host.files.write(path, new, f"set {', '.join(edit['keys'])} to {to} in {path}")
            configs.append({"file": str(path), "before": _sha(original), "after": _sha(new)})
        return {"index_sha256": {Path(k).name: v for k, v in copied.items()},
                "linked": len(added), "unlinked": len(gone), "configs": configs,
                "summary": f"index copied to {to}, {len(added)} more attachments linked, "
                           f"config points at {to}"}

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        to = Path(intent["to"])
        for name, digest in facts["index_sha256"].items():
            if host.files.sha256(to / name) != digest:
                raise StepError(f"the copy {to / name} does not match what was read",
                                hint="check the disk; the old folder was not changed")
        config = service_config(ctx)
        for key, got in (("StorageDirectory", config.storage_dir), ("IndexDirectory", config.index_dir)):
            if Path(got) != to:
                raise StepError(f"after the rewrite the config's {key} is {got}, not {to}",
                                hint=f"is {key} also set in another file of the config folder?")
        return {}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        intent = record.intent
        if not intent:
            return "nothing to undo"
        restored = []
        for edit in intent.get("edits", []):
            path, backup = Path(edit["file"]), Path(edit["backup"])
            if not host.files.exists(backup):
                continue  # the rewrite never began: the backup comes first
            saved = host.files.read_bytes(backup)
            if host.files.read_bytes(path) != saved:
                host.files.write(path, saved, f"restore {path} from {backup}")
                restored.append(str(path))
        text = clear_target(host, ctx, intent)
        back = f"config restored ({', '.join(restored)})" if restored else "config unchanged"
        return f"{back}; {text}"

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        for cfg in record.facts.get("configs", []):
            if _sha(host.files.read_bytes(Path(cfg["file"]))) != cfg["after"]:
                return f"{cfg['file']} changed since the relocation"
        if not host.files.exists(Path(record.intent["to"]) / "index"):
            return "the relocated index is gone"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        steps = [shlex.join(["cp", "-p", "--", e["backup"], e["file"]])
                 for e in record.intent.get("edits", [])]
        return ("restore the config byte for byte: " + "; ".join(steps) +
                f" (the old folder {record.intent.get('storage')} was never written)")


def delta(host: Any, ctx: RunContext, storage: Path, to: Path) -> tuple[list[str], list[str]]:
    """(files to link, links to drop) so that `to` mirrors `storage`'s attachments.

    After staging in this process, only the folders whose mtime changed since (or changed
    within RECENT_NS before it, for coarse timestamps) are listed: the work after the stop
    does not grow with the archive. Otherwise both trees are walked.
    """
    staged = ctx.cache.get(("staged", str(to)))
    if staged is None:
        source = set(host.files.walk(storage, skip=INDEX_NAMES))
        target = set(host.files.walk(to, skip=INDEX_NAMES))
        return sorted(source - target), sorted(target - source)
    then, taken = staged
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


def clear_target(host: Any, ctx: RunContext, intent: dict) -> str:
    """Remove our links from the new folder; if it holds anything else, move it aside instead."""
    to = Path(intent.get("to", ""))
    if not intent or not host.files.exists(to):
        return "no new folder"
    storage = Path(intent["storage"])
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
    if intent.get("created"):
        host.files.remove_empty_tree(to, f"remove the emptied folder {to}")
        return f"{to} removed (it held only links)"
    return "links removed" if ours else "nothing to remove"


def _aside(host: Any, to: Path, run_id: str) -> Path:
    aside = to.with_name(f"{to.name}.rolled-back-{run_id}")
    n = 1
    while host.files.exists(aside):
        n += 1
        aside = to.with_name(f"{to.name}.rolled-back-{run_id}-{n}")
    return aside


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
