"""copy the SQLite index aside before any new binary opens it.

The index and its side files (`index-wal`, `index-shm`, present after a
crash) are copied durably and their SHA-256 recorded; optionally the
attachments are hard-linked too (they are immutable, so a link keeps every
file a newer Orthanc might delete). Undo puts the index back byte for byte,
and removes a side file the snapshot did not have (a stale WAL replayed on
the restored index would corrupt it). The snapshot is kept after a
successful run: it is the rollback point for a later manual rollback.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, StepError
from orchestrator.journal import StepRecord
from orchestrator.steps.base import RunContext, StepBase, service_config

INDEX_NAMES = ("index", "index-wal", "index-shm")


def snapshot_dir(ctx: RunContext, options: dict) -> Path:
    """Where a snapshot goes: the plan's `dir`, else the run's own folder."""
    given = options.get("dir")
    return Path(given) / ctx.run_id if given else Path(ctx.run_dir) / "snapshot"


class Snapshot(StepBase):
    kind = "snapshot"

    def describe(self) -> str:
        where = self.options.get("dir") or "the run's folder"
        links = " and hard-link the attachments" if self.options.get("link_attachments") else ""
        return f"copy the SQLite index to {where}{links}"

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        config = service_config(ctx)
        if config.index_backend != "sqlite":
            if not self.options.get("allow_non_sqlite"):
                raise InputError(f"the index is in {config.index_backend}: there is no "
                                 "file to copy", hint="take a database dump with a `command` step "
                                 "and set snapshot: {allow_non_sqlite: true}")
            return [f"no index copy ({config.index_backend}); rely on your own dump"]
        if self.options.get("link_attachments"):
            where = snapshot_dir(ctx, self.options)
            if not host.files.same_device(config.storage_dir, where):
                raise InputError(f"{where} is not on the file system of "
                                 f"{config.storage_dir}: attachments cannot be hard-linked",
                                 hint="set snapshot.dir to a folder on the storage's file system")
        return []

    def intend(self, host: Any, ctx: RunContext) -> dict:
        config = service_config(ctx)
        if config.index_backend != "sqlite":
            return {"skipped": True, "backend": config.index_backend}
        index_dir = Path(config.index_dir)
        if not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}",
                            hint="check IndexDirectory in the configuration")
        present = [n for n in INDEX_NAMES if host.files.exists(index_dir / n)]
        return {"dir": str(snapshot_dir(ctx, self.options)), "index_dir": str(index_dir),
                "files": present, "storage_dir": str(config.storage_dir),
                "link_attachments": bool(self.options.get("link_attachments"))}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        if intent.get("skipped"):
            return {"summary": f"no index file ({intent['backend']})"}
        where, index_dir = Path(intent["dir"]), Path(intent["index_dir"])
        if not host.files.exists(where):
            host.files.make_dir(where, like=index_dir)
        copied = host.files.copy([(index_dir / n, where / n) for n in intent["files"]],
                                 f"copy the SQLite index of {index_dir} to {where}")
        facts: dict = {"sha256": {Path(k).name: v for k, v in copied.items()}}
        if intent["link_attachments"]:
            storage = Path(intent["storage_dir"])
            rels = host.files.walk(storage, skip=INDEX_NAMES)
            host.files.link([(storage / r, where / "attachments" / r) for r in rels],
                            f"hard-link the {len(rels)} attachments of {storage} into "
                            f"{where / 'attachments'}")
            facts["attachments"] = len(rels)
        facts["summary"] = f"index copied to {where}" + (
            f", {facts['attachments']} attachments linked" if "attachments" in facts else "")
        return facts

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        if intent.get("skipped"):
            return {}
        where = Path(intent["dir"])
        for name, digest in facts["sha256"].items():
            if host.files.sha256(where / name) != digest:
                raise StepError(f"the copy {where / name} does not match what was read",
                                hint="check the disk; the index was not changed")
        return {}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        intent, facts = record.intent, record.facts
        if intent.get("skipped") or not intent:
            return "nothing to undo"
        if "sha256" not in facts:
            # The copy never finished, so nothing after it ran: the live index is untouched.
            return "snapshot incomplete; the live index was never touched"
        return restore(host, Path(intent["dir"]), Path(intent["index_dir"]), facts,
                       Path(intent["storage_dir"]) if facts.get("attachments") else None)

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        if record.intent.get("skipped"):
            return None
        where = Path(record.intent["dir"])
        for name, digest in record.facts.get("sha256", {}).items():
            if not host.files.exists(where / name) or host.files.sha256(where / name) != digest:
                return f"the snapshot {where / name} is missing or changed"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        where, index_dir = record.intent.get("dir", "?"), record.intent.get("index_dir", "?")
        copies = [shlex.join(["cp", "-p", "--", str(Path(where) / n), str(Path(index_dir) / n)])
                  for n in record.facts.get("sha256", {"index": ""})]
        return (f"with the service stopped: {'; '.join(copies)}; delete any index-wal/index-shm "
                f"in {index_dir} that {where} lacks; then start the service")


class StageSnapshot(StepBase):
    """Pre-copy the index into the snapshot folder while the service still runs, so that the
    snapshot after the stop only writes the blocks that changed."""

    kind = "stage-snapshot"

    def describe(self) -> str:
        return "pre-copy the SQLite index into the snapshot folder (before the stop)"

    def intend(self, host: Any, ctx: RunContext) -> dict:
        config = service_config(ctx)
        if config.index_backend != "sqlite":
            return {"skipped": True}
        where = snapshot_dir(ctx, self.options)
        return {"dir": str(where), "index_dir": str(config.index_dir),
                "created": not host.files.exists(where)}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        if intent.get("skipped") or not host.files.exists(Path(intent["index_dir"]) / "index"):
            return {"summary": "nothing to pre-copy"}
        where, index_dir = Path(intent["dir"]), Path(intent["index_dir"])
        if not host.files.exists(where):
            host.files.make_dir(where, like=index_dir)
        host.files.precopy([(index_dir / "index", where / "index")],
                           f"pre-copy the SQLite index of {index_dir} to {where} "
                           "(brought up to date after the stop)")
        return {"summary": f"index pre-copied to {where}"}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        where = Path(record.intent.get("dir", ""))
        if record.intent.get("skipped") or not record.intent or not host.files.exists(where):
            return "nothing to undo"
        if record.intent.get("created") and not host.files.walk(where):
            host.files.remove_empty_tree(where, f"remove the unused snapshot folder {where}")
            return f"{where} removed"
        return "kept the snapshot folder (it holds a snapshot)"


def restore(host: Any, where: Path, index_dir: Path, facts: dict, storage: Path | None) -> str:
    """Put the snapshot's index files back into `index_dir`, byte for byte."""
    from orchestrator.orthanc.index import index_is_locked

    digests = facts["sha256"]
    back = [n for n in digests if not host.files.exists(index_dir / n)
            or host.files.sha256(index_dir / n) != digests[n]]
    stale = [index_dir / n for n in INDEX_NAMES if n not in digests and host.files.exists(index_dir / n)]
    if back or stale:
        for name, digest in digests.items():
            if host.files.sha256(where / name) != digest:
                raise StepError(f"the snapshot {where / name} is damaged (SHA-256 differs)",
                                hint="restore the index from your backups")
        if index_is_locked(index_dir):
            raise StepError(f"cannot restore the index: a process holds {index_dir / 'index'}",
                            hint="stop the service first")
    if stale:
        host.files.remove(stale, f"remove {', '.join(p.name for p in stale)} from {index_dir} "
                                 "(not in the snapshot)")
    if back:
        host.files.copy([(where / n, index_dir / n) for n in back],
                        f"restore {', '.join(back)} into {index_dir} from {where}")
    relinked = 0
    if storage is not None:
        attachments = where / "attachments"
        missing = [r for r in host.files.walk(attachments) if not host.files.exists(storage / r)]
        if missing:
            relinked = host.files.link([(attachments / r, storage / r) for r in missing],
                                       f"link back {len(missing)} attachments deleted from {storage}")
    done = f"index restored from {where}" if back or stale else "index unchanged since the snapshot"
    return done + (f"; {relinked} attachments linked back" if relinked else "")
