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

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InputError, StepError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.config_edit import set_string_value
from orchestrator.paths import Overlap
from orchestrator.steps import database as db
from orchestrator.steps.folders import (INDEX_NAMES, LAYOUT_DEPTH, RECENT_NS,  # noqa: F401
                                        RECORDED, Listing, clear_target, delta, estimate,
                                        is_staged, snapshot_digests)
from orchestrator.steps.base import (Copy, Needs, RunContext, StepBase, StepFacts, StepIntent,
                                     StepOptions)
from orchestrator.steps.kind import StepKind, stage_id
from orchestrator.steps.record import Record

KEYS = ("StorageDirectory", "IndexDirectory")


@dataclass(frozen=True, kw_only=True)
class RelocateOptions(StepOptions):
    to: Path | None = None  # the new folder (attachments hard-linked, SQLite index copied)
    database: str | None = None  # PostgreSQL/MySQL: the clone of the index database
    source: Path | None = field(default=None, metadata={"key": "from"})
    config_file: Path | None = None


@dataclass(frozen=True, kw_only=True)
class StageIntent(StepIntent):
    to: Path | None = None  # None: a database-only relocate, nothing to stage
    storage: Path | None = None
    index_dir: Path | None = None
    created: bool = False


@dataclass(frozen=True, kw_only=True)
class StageFacts(StepFacts):
    linked: int = 0


@dataclass(frozen=True, kw_only=True)
class Edit(Record):
    """One config file to rewrite, and where its byte-exact backup goes."""

    file: Path
    keys: tuple[str, ...]
    backup: Path


@dataclass(frozen=True, kw_only=True)
class RelocateIntent(StepIntent):
    to: Path | None = None
    storage: Path | None = None
    index_dir: Path | None = None
    index_files: tuple[str, ...] = ()
    created: bool = False
    edits: tuple[Edit, ...] = ()
    database: db.DatabaseEdit | None = None


@dataclass(frozen=True, kw_only=True)
class Rewritten(Record):
    """One config file as rewritten: its SHA-256 before and after."""

    file: Path
    before: str
    after: str


@dataclass(frozen=True, kw_only=True)
class RelocateFacts(StepFacts):
    index_sha256: dict[str, str] = field(default_factory=dict)
    linked: int = 0
    unlinked: int = 0
    configs: tuple[Rewritten, ...] = ()
    database_config: str | None = None  # SHA-256 of the file after its Database rewrite
    owner: str | None = None  # the clone's owner, as checked


def sources(ctx: RunContext, options: RelocateOptions) -> tuple[Path, Path]:
    """(storage folder, index folder) to relocate from: `from`, else the config's."""
    if options.source is not None:
        return options.source, options.source
    config = ctx.config()
    return Path(config.storage_dir), Path(config.index_dir)


def _check_target(host: Host, ctx: RunContext, options: RelocateOptions, *,
                  staged_by: str | None) -> Path | None:
    to = options.to
    if to is None:
        if options.database is None:
            raise InputError("relocate needs `to` (a new folder), `database` (a new database "
                             "name) or both", hint="e.g. relocate: {database: orthanc_next}")
        return None
    storage, index_dir = sources(ctx, options)
    # Judged on real paths: a symlinked StorageDirectory or a `..` must not let the run
    # write a tree inside the folder that is the rollback point.
    for old in dict.fromkeys((storage, index_dir)):
        how = host.files.overlap(to, old)
        if how is not Overlap.APART:
            words = {Overlap.SAME: "is the same folder as", Overlap.INSIDE: "is inside",
                     Overlap.CONTAINS: "is a parent of"}[how]
            raise InputError(f"relocate.to {to} {words} the current folder {old} "
                             "(once links and `..` are resolved)",
                             hint="choose a new sibling folder, e.g. /var/lib/orthanc/db-v7")
    if host.files.is_inside(ctx.run_dir, storage):
        raise InputError(f"the state folder {ctx.run_dir.parent.parent} is inside the storage "
                         f"folder {storage}", hint="set state_dir (or --state-dir) elsewhere, "
                         "e.g. /var/lib/orchestrator")
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


class StageLinks(StepBase[RelocateOptions, StageIntent, StageFacts]):
    """Hard-link the attachments into the new folder while the service still runs."""

    kind = StepKind.STAGE_LINKS
    Options = RelocateOptions
    Intent = StageIntent
    Facts = StageFacts

    def describe(self) -> str:
        if self.options.to is None:
            return "nothing to pre-stage (the database is cloned after the stop)"
        return f"pre-stage hard links of the attachments in {self.options.to} (before the stop)"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        _check_target(host, ctx, self.options, staged_by=None)
        return []

    def intend(self, host: Host, ctx: RunContext) -> StageIntent:
        if self.options.to is None:
            return StageIntent()
        storage, index_dir = sources(ctx, self.options)
        return StageIntent(to=self.options.to, storage=storage, index_dir=index_dir,
                           created=not host.files.exists(self.options.to))

    def apply(self, host: Host, ctx: RunContext, intent: StageIntent) -> StageFacts:
        to, storage, index_dir = intent.to, intent.storage, intent.index_dir
        if to is None or storage is None or index_dir is None:
            return StageFacts(summary="nothing to pre-stage")
        if not host.files.exists(to):
            host.files.make_dir(to, like=storage)
        got = host.files.mirror(storage, to, skip=INDEX_NAMES, depth=LAYOUT_DEPTH,
                                label=f"hard-link the attachments of {storage} into {to} "
                                      "(those not there yet)")
        ctx.cache[("staged", str(to))] = RECORDED if got is None else got
        if host.files.exists(index_dir / "index"):
            host.files.precopy([(index_dir / "index", to / "index")],
                               f"pre-copy the SQLite index of {index_dir} into {to} "
                               "(brought up to date after the stop)")
        linked = f"{got.linked} attachments linked into {to}" if got is not None else \
            f"the attachments{estimate(ctx)} to link into {to}"
        return StageFacts(linked=got.linked if got is not None else 0,
                          summary=f"{linked}, index pre-copied")

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        return clear_target(host, ctx, self.intent_of(record))

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        intent = self.intent_of(record)
        if intent is not None and intent.to is None:
            return None
        return None if intent is not None and host.files.is_dir(intent.to) else "the new folder is gone"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        return f"remove {intent.to if intent else None} (it holds only hard links; the originals stay)"


class Relocate(StepBase[RelocateOptions, RelocateIntent, RelocateFacts]):
    kind = StepKind.RELOCATE
    Options = RelocateOptions
    Intent = RelocateIntent
    Facts = RelocateFacts
    staged_by = StepKind.STAGE_LINKS

    def describe(self) -> str:
        src = f" from {self.options.source}" if self.options.source else ""
        parts = [f"clone the index database into {self.options.database} (owner checked)"] \
            if self.options.database else []
        if self.options.to is not None:
            parts.append(("" if self.options.database else f"copy the index{src} into "
                          f"{self.options.to}, ") + f"link the attachments into {self.options.to}")
        return ", ".join(parts) + ", point the config there"

    def needs(self, ctx: RunContext) -> Needs:
        if self.options.to is None:
            return Needs()
        return Needs(copies=(Copy(self.options.to, "the relocated index", sqlite_only=True),),
                     index_source=self.options.source)

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        if self.options.database is not None:
            db.clone_check(host, ctx, self.options.database)
        to = _check_target(host, ctx, self.options, staged_by=stage_id(self.id))
        if to is None:
            return []
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
        config = ctx.config()
        forced = self.options.config_file
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
            edits.setdefault(Path(where), []).append(key)
        return edits

    def intend(self, host: Host, ctx: RunContext) -> RelocateIntent:
        edit = db.clone_edit(ctx, self.options.database) if self.options.database else None
        to = self.options.to
        if to is None:
            return RelocateIntent(database=edit)
        storage, index_dir = sources(ctx, self.options)
        if edit is None and not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}",
                            hint="check relocate.from or IndexDirectory")
        backups = Path(ctx.run_dir) / "config-backup"
        edits = tuple(Edit(file=f, keys=tuple(keys), backup=backups / f"{n}-{f.name}")
                      for n, (f, keys) in enumerate(sorted(self._edits(ctx).items())))
        return RelocateIntent(
            to=to, storage=storage, index_dir=index_dir,
            index_files=tuple(n for n in INDEX_NAMES if host.files.exists(index_dir / n)),
            created=not host.files.exists(to), edits=edits, database=edit)

    def apply(self, host: Host, ctx: RunContext, intent: RelocateIntent) -> RelocateFacts:
        # The clone first; the Database key is rewritten last, after the folder keys, so that
        # undo (database backup first, then the folder keys' backups) gives the original bytes.
        owner = db.clone_apply(host, ctx, intent.database) if intent.database else None
        clone = f"database cloned into {intent.database.new} (owner {owner}), config points " \
            "there" if intent.database else ""
        to, storage, index_dir = intent.to, intent.storage, intent.index_dir
        if to is None or storage is None or index_dir is None:
            sha = db.point_config(host, ctx, intent.database) if intent.database else None
            return RelocateFacts(database_config=sha, owner=owner, summary=clone)
        if not host.files.exists(to):
            host.files.make_dir(to, like=storage)
        listing = Listing(index_dir) if is_staged(ctx, to) else None
        if listing is not None:
            listing.start()
        known = snapshot_digests(ctx, index_dir, intent.index_files)
        copied = host.files.copy([(index_dir / n, to / n) for n in intent.index_files],
                                 f"copy the SQLite index of {index_dir} into {to}",
                                 digest=known is None)
        added, gone = delta(host, ctx, storage, to, listing)
        if added:
            host.files.link([(storage / r, to / r) for r in added],
                            f"hard-link {len(added)} attachments of {storage} into {to}")
        if gone:
            host.files.remove([to / r for r in gone],
                              f"unlink {len(gone)} attachments deleted from {storage} since staging")
        configs = []
        for edit in intent.edits:
            original = host.files.read_bytes(edit.file)
            text = original.decode("utf-8", errors="surrogateescape")
            for key in edit.keys:
                text = set_string_value(text, key, str(to))
            new = text.encode("utf-8", errors="surrogateescape")
            if not host.files.exists(edit.backup.parent):
                host.files.make_dir(edit.backup.parent)
            host.files.copy([(edit.file, edit.backup)], f"back up {edit.file} to {edit.backup}")
            host.files.write(edit.file, new, f"set {', '.join(edit.keys)} to {to} in {edit.file}")
            ctx.forget_config()
            configs.append(Rewritten(file=edit.file, before=_sha(original), after=_sha(new)))
        sha = db.point_config(host, ctx, intent.database) if intent.database else None
        what = "" if intent.database else f"index copied to {to}, "
        digests = known if known is not None and copied else \
            {Path(k).name: v for k, v in copied.items()}
        return RelocateFacts(index_sha256=digests,
                             linked=len(added), unlinked=len(gone), configs=tuple(configs),
                             database_config=sha, owner=owner,
                             summary=(clone + "; " if clone else "") + f"{what}{len(added)} more "
                                     f"attachments linked, config points at {to}")

    def verify(self, host: Host, ctx: RunContext, intent: RelocateIntent,
               facts: RelocateFacts) -> RelocateFacts:
        if intent.database is not None:
            db.clone_verify(host, ctx, intent.database)
        to = intent.to
        if to is None:
            return facts
        # The index copy is not read back (see Snapshot.verify): the upgrade and the health
        # check are what use it, and the old folder, never written, is the rollback point.
        ctx.forget_config()  # read what the rewrite left on disk
        config = ctx.config()
        for key, got in (("StorageDirectory", config.storage_dir), ("IndexDirectory", config.index_dir)):
            if Path(got) != to:
                raise StepError(f"after the rewrite the config's {key} is {got}, not {to}",
                                hint=f"is {key} also set in another file of the config folder?")
        return facts

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None:
            return "nothing to undo"
        # The database rewrite came after the folder keys': its backup goes back first.
        clone = db.clone_undo(host, ctx, intent.database) if intent.database else ""
        if intent.to is None:
            return clone
        restored = []
        for edit in intent.edits:
            if not host.files.exists(edit.backup):
                continue  # the rewrite never began: the backup comes first
            saved = host.files.read_bytes(edit.backup)
            if host.files.read_bytes(edit.file) != saved:
                host.files.write(edit.file, saved, f"restore {edit.file} from {edit.backup}")
                ctx.forget_config()
                restored.append(str(edit.file))
        text = clear_target(host, ctx, intent)
        back = f"config restored ({', '.join(restored)})" if restored else "config unchanged"
        return (f"{clone}; " if clone else "") + f"{back}; {text}"

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        intent, facts = self.intent_of(record), self.facts_of(record)
        if intent is not None and intent.database is not None:
            # The Database rewrite came last: the folder keys are checked through the config.
            return db.clone_holds(host, ctx, intent.database) or (
                None if intent.to is None or Path(ctx.config().storage_dir) == intent.to
                else f"the config's StorageDirectory is no longer {intent.to}")
        for cfg in facts.configs if facts else ():
            if _sha(host.files.read_bytes(cfg.file)) != cfg.after:
                return f"{cfg.file} changed since the relocation"
        if intent is None or intent.to is None:
            return "nothing was relocated"
        if intent.database is None and not host.files.exists(intent.to / "index"):
            return "the relocated index is gone"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is not None and intent.database is not None:
            return db.clone_manual(intent.database)
        steps = [shlex.join(["cp", "-p", "--", str(e.backup), str(e.file)])
                 for e in (intent.edits if intent else ())]
        return ("restore the config byte for byte: " + "; ".join(steps) +
                f" (the old folder {intent.storage if intent else None} was never written)")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
