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
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError, StepError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.index import index_is_locked
from orchestrator.steps import database as db
from orchestrator.steps.base import (Copy, Needs, RunContext, StepBase, StepFacts, StepIntent,
                                     StepOptions, latest)
from orchestrator.steps.kind import StepKind

INDEX_NAMES = ("index", "index-wal", "index-shm")


@dataclass(frozen=True, kw_only=True)
class SnapshotOptions(StepOptions):
    dir: Path | None = None
    link_attachments: bool = False
    allow_non_sqlite: bool = False


@dataclass(frozen=True, kw_only=True)
class SnapshotIntent(StepIntent):
    skipped: bool = False  # the index is not SQLite: nothing to copy
    backend: str = "sqlite"
    dir: Path | None = None
    index_dir: Path | None = None
    files: tuple[str, ...] = ()
    storage_dir: Path | None = None
    link_attachments: bool = False
    dump: db.DumpPlan | None = None  # PostgreSQL / MySQL: the index database's dump


@dataclass(frozen=True, kw_only=True)
class SnapshotFacts(StepFacts):
    sha256: dict[str, str] | None = None  # file name -> digest, once the copy is done
    attachments: int | None = None
    dump: db.DumpTaken | None = None


@dataclass(frozen=True, kw_only=True)
class StageIntent(StepIntent):
    skipped: bool = False
    dir: Path | None = None
    index_dir: Path | None = None
    created: bool = False
    dump: db.DumpPlan | None = None


@dataclass(frozen=True, kw_only=True)
class StageFacts(StepFacts):
    dump: db.DumpTaken | None = None


DATABASES = ("postgresql", "mysql")


def snapshot_dir(ctx: RunContext, options: SnapshotOptions) -> Path:
    """Where a snapshot goes: the plan's `dir`, else the run's own folder."""
    return options.dir / ctx.run_id if options.dir else Path(ctx.run_dir) / "snapshot"


class Snapshot(StepBase[SnapshotOptions, SnapshotIntent, SnapshotFacts]):
    kind = StepKind.SNAPSHOT
    Options = SnapshotOptions
    Intent = SnapshotIntent
    Facts = SnapshotFacts
    staged_by = StepKind.STAGE_SNAPSHOT

    def describe(self) -> str:
        where = self.options.dir or "the run's folder"
        links = " and hard-link the attachments" if self.options.link_attachments else ""
        return f"copy the SQLite index to {where}{links}"

    def needs(self, ctx: RunContext) -> Needs:
        return Needs(copies=(Copy(snapshot_dir(ctx, self.options), "the snapshot",
                                  sqlite_only=True),))

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        config = ctx.config()
        if config.index_backend in DATABASES:
            db.dump_check(host, ctx, snapshot_dir(ctx, self.options))
            return []
        if config.index_backend != "sqlite":
            if not self.options.allow_non_sqlite:
                raise InputError(f"the index is in {config.index_backend}: there is no "
                                 "file to copy", hint="take a database dump with a `command` step "
                                 "and set snapshot: {allow_non_sqlite: true}")
            return [f"no index copy ({config.index_backend}); rely on your own dump"]
        if self.options.link_attachments:
            where = snapshot_dir(ctx, self.options)
            if not host.files.same_device(config.storage_dir, where):
                raise InputError(f"{where} is not on the file system of "
                                 f"{config.storage_dir}: attachments cannot be hard-linked",
                                 hint="set snapshot.dir to a folder on the storage's file system")
        return []

    def intend(self, host: Host, ctx: RunContext) -> SnapshotIntent:
        config = ctx.config()
        if config.index_backend in DATABASES:
            return SnapshotIntent(backend=config.index_backend,
                                  dump=db.dump_plan(ctx, snapshot_dir(ctx, self.options)))
        if config.index_backend != "sqlite":
            return SnapshotIntent(skipped=True, backend=config.index_backend)
        index_dir = Path(config.index_dir)
        if not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}",
                            hint="check IndexDirectory in the configuration")
        present = tuple(n for n in INDEX_NAMES if host.files.exists(index_dir / n))
        return SnapshotIntent(dir=snapshot_dir(ctx, self.options), index_dir=index_dir,
                              files=present, storage_dir=Path(config.storage_dir),
                              link_attachments=self.options.link_attachments)

    def apply(self, host: Host, ctx: RunContext, intent: SnapshotIntent) -> SnapshotFacts:
        if intent.dump is not None:
            rec = latest(ctx, StepKind.STAGE_SNAPSHOT)
            staged = StageFacts.from_json(rec.facts).dump if rec is not None and rec.facts else None
            taken = db.take_dump(host, ctx, intent.dump, staged)
            how = "the dump staged before the stop is current (nothing written since)" \
                if taken.reused else f"dumped to {taken.path}"
            return SnapshotFacts(dump=taken, summary=f"{intent.dump.database}: {how}")
        if intent.skipped or intent.dir is None or intent.index_dir is None:
            return SnapshotFacts(summary=f"no index file ({intent.backend})")
        where, index_dir = intent.dir, intent.index_dir
        if not host.files.exists(where):
            host.files.make_dir(where, like=index_dir)
        copied = host.files.copy([(index_dir / n, where / n) for n in intent.files],
                                 f"copy the SQLite index of {index_dir} to {where}")
        digests = {Path(k).name: v for k, v in copied.items()}
        attachments = None
        if intent.link_attachments and intent.storage_dir is not None:
            storage = intent.storage_dir
            rels = host.files.walk(storage, skip=INDEX_NAMES)
            host.files.link([(storage / r, where / "attachments" / r) for r in rels],
                            f"hard-link the {len(rels)} attachments of {storage} into "
                            f"{where / 'attachments'}")
            attachments = len(rels)
        return SnapshotFacts(sha256=digests, attachments=attachments,
                             summary=f"index copied to {where}" + (
                                 f", {attachments} attachments linked" if attachments is not None else ""))

    def verify(self, host: Host, ctx: RunContext, intent: SnapshotIntent,
               facts: SnapshotFacts) -> SnapshotFacts:
        if facts.dump is not None and facts.dump.sha256 is not None:
            if host.files.sha256(facts.dump.path) != facts.dump.sha256:
                raise StepError(f"the dump {facts.dump.path} does not match its SHA-256",
                                hint="check the disk; the database was not changed")
        # The index copies are not read back here: their digest was taken in the pass that
        # copied them, and a read right after the write would come from the page cache,
        # proving nothing about the disk. They are checked against it where they are used:
        # `restore` (rollback) and `holds` (resume) hash the snapshot before relying on it.
        return facts

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent, facts = self.intent_of(record), self.facts_of(record)
        if intent is not None and intent.dump is not None:
            if facts is None or facts.dump is None or facts.dump.sha256 is None:
                db.remove_partial(host, intent.dump)
                return "dump incomplete; the database was never touched after it"
            return db.restore_dump(host, ctx, intent.dump, facts.dump)
        if intent is None or intent.skipped or intent.dir is None or intent.index_dir is None:
            return "nothing to undo"
        if facts is None or facts.sha256 is None:
            # The copy never finished, so nothing after it ran: the live index is untouched.
            return "snapshot incomplete; the live index was never touched"
        return restore(host, intent.dir, intent.index_dir, facts.sha256,
                       intent.storage_dir if facts.attachments else None)

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        intent, facts = self.intent_of(record), self.facts_of(record)
        if facts is not None and facts.dump is not None and facts.dump.sha256:
            path = facts.dump.path
            if not host.files.exists(path) or host.files.sha256(path) != facts.dump.sha256:
                return f"the dump {path} is missing or changed"
            return None
        if intent is None or intent.skipped or intent.dir is None:
            return None
        for name, digest in ((facts.sha256 if facts else None) or {}).items():
            where = intent.dir / name
            if not host.files.exists(where) or host.files.sha256(where) != digest:
                return f"the snapshot {where} is missing or changed"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        intent, facts = self.intent_of(record), self.facts_of(record)
        if intent is not None and intent.dump is not None:
            path = facts.dump.path if facts and facts.dump else intent.dump.path
            tool = "createdb -O ROLE NEW; pg_restore --no-owner -d NEW" \
                if intent.dump.engine == "postgresql" else \
                "CREATE DATABASE NEW CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; mariadb NEW <"
            return (f"with the service stopped: {tool} {path}; then set {intent.dump.section}."
                    f"Database to NEW in {intent.dump.file}")
        where = str(intent.dir) if intent and intent.dir else "?"
        index_dir = str(intent.index_dir) if intent and intent.index_dir else "?"
        names = (facts.sha256 if facts else None) or {"index": ""}
        copies = [shlex.join(["cp", "-p", "--", str(Path(where) / n), str(Path(index_dir) / n)])
                  for n in names]
        return (f"with the service stopped: {'; '.join(copies)}; delete any index-wal/index-shm "
                f"in {index_dir} that {where} lacks; then start the service")


class StageSnapshot(StepBase[SnapshotOptions, StageIntent, StageFacts]):
    """Pre-copy the index into the snapshot folder while the service still runs, so that the
    snapshot after the stop only writes the blocks that changed."""

    kind = StepKind.STAGE_SNAPSHOT
    Options = SnapshotOptions
    Intent = StageIntent
    Facts = StageFacts

    def describe(self) -> str:
        return "pre-copy the index (SQLite) or dump the index database, before the stop"

    def intend(self, host: Host, ctx: RunContext) -> StageIntent:
        config = ctx.config()
        if config.index_backend in DATABASES:
            where = snapshot_dir(ctx, self.options)
            return StageIntent(dump=db.dump_plan(ctx, where, "-staged"),
                               created=not host.files.exists(where))
        if config.index_backend != "sqlite":
            return StageIntent(skipped=True)
        where = snapshot_dir(ctx, self.options)
        return StageIntent(dir=where, index_dir=Path(config.index_dir),
                           created=not host.files.exists(where))

    def apply(self, host: Host, ctx: RunContext, intent: StageIntent) -> StageFacts:
        if intent.dump is not None:
            taken = db.stage_dump(host, ctx, intent.dump)
            return StageFacts(dump=taken, summary=f"{intent.dump.database} dumped to "
                                                  f"{taken.path} while the service runs")
        if intent.skipped or intent.dir is None or intent.index_dir is None \
                or not host.files.exists(intent.index_dir / "index"):
            return StageFacts(summary="nothing to pre-copy")
        where, index_dir = intent.dir, intent.index_dir
        if not host.files.exists(where):
            host.files.make_dir(where, like=index_dir)
        host.files.precopy([(index_dir / "index", where / "index")],
                           f"pre-copy the SQLite index of {index_dir} to {where} "
                           "(brought up to date after the stop)")
        return StageFacts(summary=f"index pre-copied to {where}")

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is not None and intent.dump is not None:
            db.remove_partial(host, intent.dump)
            return "kept the staged dump" if host.files.exists(intent.dump.path) else "no dump"
        if intent is None or intent.skipped or intent.dir is None \
                or not host.files.exists(intent.dir):
            return "nothing to undo"
        where = intent.dir
        if intent.created and not host.files.walk(where):
            host.files.remove_empty_tree(where, f"remove the unused snapshot folder {where}")
            return f"{where} removed"
        return "kept the snapshot folder (it holds a snapshot)"


def restore(host: Host, where: Path, index_dir: Path, digests: dict[str, str],
            storage: Path | None) -> str:
    """Put the snapshot's index files back into `index_dir`, byte for byte."""
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
