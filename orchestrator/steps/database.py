"""The database half of relocate and snapshot, for an index kept in PostgreSQL or MySQL.

- `relocate: {database: NEW}`: after the stop, `CREATE DATABASE NEW TEMPLATE OLD OWNER
  role` (MySQL: a dump loaded into NEW), then the plugin's `Database` key rewritten in
  place, comments kept. OLD is never connected to again: it is the rollback point. Undo
  puts the config back byte for byte and renames NEW to `NEW_rolled_back_<run>` (kept for
  inspection). A clone whose client was killed still completes on the server, so undo
  waits for a running `CREATE DATABASE` and looks for NEW whatever the journal says.
- `snapshot`: a dump (`pg_dump -Fc`; MySQL `--single-transaction --routines --triggers`)
  staged while the service runs, again after the stop only when the database was written
  since (PostgreSQL's row counters; MySQL always dumps again). Undo restores the dump into
  a fresh database and points the config at it, when the database changed since the dump
  (the only way back for MySQL after a newer plugin raised its revision).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import InputError, StepError
from orchestrator.host.databases import (
    Connection, CreateDatabaseDeniedError, DatabaseError, DatabaseExistsError, DumpSpaceError,
    check_name)
from orchestrator.host.host import Host
from orchestrator.orthanc.backends import DatabaseSection, index_database
from orchestrator.orthanc.config_edit import set_string_value
from orchestrator.orthanc.plugin_index import read_index_tables
from orchestrator.steps.base import RunContext
from orchestrator.steps.record import Record

CLONE_SETTLE = 600.0  # seconds to wait for an orphaned CREATE DATABASE to finish


@dataclass(frozen=True, kw_only=True)
class DatabaseEdit(Record):
    """The plugin's Database key to rewrite, in which file, and where its backup goes."""

    file: Path
    section: str
    old: str
    new: str
    backup: Path


@dataclass(frozen=True, kw_only=True)
class Fingerprint(Record):
    """What shows that a database changed: revision, tables, counts, rows written."""

    revision: int | None = None
    tables: tuple[str, ...] = ()
    counts: dict[str, int] | None = None
    writes: int | None = None


# -- shared ------------------------------------------------------------------------------

def index_section(ctx: RunContext, what: str) -> DatabaseSection:
    """The section holding the index; InputError naming `what` when the index is SQLite."""
    section = index_database(ctx.config())
    if section is None:
        raise InputError(f"{what}: the index is not in PostgreSQL or MySQL",
                         hint="use relocate: {to: FOLDER} for a SQLite index")
    return section


def check_database_key(host: Host, section: DatabaseSection) -> None:
    """The Database key must be a plain string in the section's file (it gets rewritten)."""
    if section.from_uri:
        raise InputError(f"{section.place('ConnectionUri')}: the database is named in a URI",
                         hint="write Host/Port/Database/Username/Password keys instead, so "
                              "the Database key can be pointed at the copy")
    text = host.files.read_bytes(section.file).decode("utf-8", errors="surrogateescape")
    try:
        set_string_value(text, "Database", section.database, section=section.section)
    except InputError as exc:
        raise InputError(f"{section.place('Database')}: {exc.message}",
                         hint="set \"Database\" explicitly in the section") from None


def check_can_create(host: Host, section: DatabaseSection, name: str) -> Connection:
    """Refuse now (nothing changed) what the clone or restore would fail on later."""
    check_name(name)
    conn = section.connection()
    server = host.databases.server(conn)  # unreachable, wrong password: refused here
    if not server.can_create_db:
        raise CreateDatabaseDeniedError(conn, f"role {conn.user} may not create databases",
                                        f"ALTER ROLE {conn.user} CREATEDB (as a superuser)")
    if host.databases.exists(conn, name):
        raise DatabaseExistsError(conn, f"a database named {name} already exists on "
                                        f"{conn.where}", "choose another name, or drop it if "
                                                         "it is an old copy")
    return conn


def point_config(host: Host, ctx: RunContext, edit: DatabaseEdit) -> str:
    """Back up `edit.file` byte for byte, then rewrite its Database key; the new SHA-256."""
    original = host.files.read_bytes(edit.file)
    text = original.decode("utf-8", errors="surrogateescape")
    new = set_string_value(text, "Database", edit.new, section=edit.section).encode(
        "utf-8", errors="surrogateescape")
    if not host.files.exists(edit.backup.parent):
        host.files.make_dir(edit.backup.parent)
    if not host.files.exists(edit.backup):
        host.files.copy([(edit.file, edit.backup)], f"back up {edit.file} to {edit.backup}")
    host.files.write(edit.file, new, f"set {edit.section}.Database to {edit.new} in {edit.file}")
    ctx.forget_config()
    return hashlib.sha256(new).hexdigest()


def restore_config(host: Host, ctx: RunContext, edit: DatabaseEdit) -> bool:
    """Put `edit.file` back from its backup (if the rewrite began); True if it changed."""
    if not host.files.exists(edit.backup):
        return False
    saved = host.files.read_bytes(edit.backup)
    if host.files.read_bytes(edit.file) == saved:
        return False
    host.files.write(edit.file, saved, f"restore {edit.file} from {edit.backup}")
    ctx.forget_config()
    return True


def names_database(ctx: RunContext, name: str) -> bool:
    section = index_database(ctx.config())
    return section is not None and section.database == name


def aside_name(host: Host, conn: Connection, name: str, run_id: str, tag: str) -> str:
    """A free database name for a copy kept for inspection (`NAME_rolled_back_<run>`)."""
    run = re.sub(r"[^A-Za-z0-9]", "", run_id)[:20]
    base = f"{name[:63 - len(tag) - len(run) - 4]}_{tag}_{run}"
    candidate, n = base, 1
    while host.databases.exists(conn, candidate):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def settle_clone(host: Host, conn: Connection, name: str, timeout: float = CLONE_SETTLE) -> None:
    """Wait while a `CREATE DATABASE name` (perhaps orphaned by a crash) still runs."""
    deadline = time.monotonic() + timeout
    while host.databases.creating(conn, name):
        if time.monotonic() > deadline:
            raise StepError(f"a CREATE DATABASE {name} still runs on {conn.where}",
                            hint="wait for it to end (pg_stat_activity), then roll back again")
        time.sleep(0.5)


def fingerprint(host: Host, section: DatabaseSection, database: str) -> Fingerprint | None:
    """The database's fingerprint, or None when it cannot be read."""
    on = replace(section, database=database)
    try:
        tables, revision, counts = read_index_tables(on, host.databases)
        writes = host.databases.writes(on.connection())
    except DatabaseError:
        return None
    return Fingerprint(revision=revision, tables=tuple(sorted(t.lower() for t in tables)),
                       counts=dict(counts), writes=writes)


def changed(then: Fingerprint, now: Fingerprint | None) -> bool:
    """True unless `now` shows the same database as `then` (unknown counts as changed)."""
    if now is None:
        return True
    same = (now.revision, now.tables, now.counts) == (then.revision, then.tables, then.counts)
    if then.writes is not None and now.writes is not None:
        same = same and now.writes == then.writes
    return not same


def database_error(exc: DatabaseError) -> StepError:
    return StepError(exc.message, hint=exc.hint)


# -- relocate: {database: NEW} -------------------------------------------------------------

def clone_check(host: Host, ctx: RunContext, name: str) -> None:
    section = index_section(ctx, "relocate.database")
    if name == section.database:
        raise InputError(f"relocate.database: {name} is the current database",
                         hint="name a new database, e.g. orthanc_next")
    check_database_key(host, section)
    check_can_create(host, section, name)


def clone_edit(ctx: RunContext, name: str) -> DatabaseEdit:
    section = index_section(ctx, "relocate.database")
    return DatabaseEdit(file=section.file, section=section.section, old=section.database,
                        new=name, backup=Path(ctx.run_dir) / "config-backup" /
                        f"database-{section.file.name}")


def clone_apply(host: Host, ctx: RunContext, edit: DatabaseEdit) -> str | None:
    """Clone OLD into NEW (PostgreSQL: TEMPLATE, OWNER role, owner checked); NEW's owner."""
    conn = index_section(ctx, "relocate.database").connection()
    try:
        host.databases.clone(conn, edit.new)
    except DatabaseError as exc:
        raise database_error(exc) from exc
    return host.databases.owner(conn, edit.new)


def clone_verify(host: Host, ctx: RunContext, edit: DatabaseEdit) -> None:
    if not names_database(ctx, edit.new):
        raise StepError(f"after the rewrite the config's {edit.section}.Database is not "
                        f"{edit.new}", hint=f"is {edit.section} also set in another file?")


def clone_undo(host: Host, ctx: RunContext, edit: DatabaseEdit) -> str:
    """Config back byte for byte; NEW (if it exists, even from a killed clone) renamed aside."""
    back = restore_config(host, ctx, edit)
    section = index_database(ctx.config())
    if section is None:
        return "config restored; the database section is gone: check the clone by hand"
    conn = section.connection()
    settle_clone(host, conn, edit.new)
    text = f"config restored ({edit.file})" if back else "config unchanged"
    if not host.databases.exists(conn, edit.new):
        return f"{text}; no database {edit.new} was made"
    if conn.engine.value != "postgresql":
        return f"{text}; the copy {edit.new} is kept for inspection"
    aside = aside_name(host, conn, edit.new, ctx.run_id, "rolled_back")
    host.databases.rename(conn, edit.new, aside)
    return f"{text}; the copy {edit.new} is kept for inspection as {aside}"


def clone_holds(host: Host, ctx: RunContext, edit: DatabaseEdit) -> str | None:
    if not names_database(ctx, edit.new):
        return f"the config no longer names {edit.new}"
    section = index_database(ctx.config())
    if section is None or not host.databases.exists(section.connection(), edit.new):
        return f"the database {edit.new} is gone"
    return None


def clone_manual(edit: DatabaseEdit) -> str:
    return (f"cp -p -- {edit.backup} {edit.file} (the config back); the old database "
            f"{edit.old} was never connected to; ALTER DATABASE {edit.new} RENAME TO "
            f"{edit.new}_rolled_back (kept for inspection), after any CREATE DATABASE ended")


# -- snapshot: dumps -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DumpPlan(Record):
    """Where the index database's dump goes, and which config names the database."""

    engine: str
    file: Path
    section: str
    database: str
    path: Path


@dataclass(frozen=True, kw_only=True)
class DumpTaken(Record):
    """A dump as written: its file, SHA-256, and the database's fingerprint then."""

    path: Path
    sha256: str | None = None
    size: int = 0
    seconds: float = 0.0
    reused: bool = False  # the dump staged before the stop was still current
    fingerprint: Fingerprint | None = None


def dump_check(host: Host, ctx: RunContext, folder: Path) -> None:
    """Refuse now: no dump tools, an unreachable server, too little room for the dump."""
    section = index_section(ctx, "snapshot")
    conn = section.connection()
    host.databases.require_dump_tools(conn)
    host.databases.server(conn)
    size = host.databases.size(conn)
    need = size * (2 if conn.engine.value == "mysql" else 1)
    free = host.files.free_bytes(folder)
    if free < need:
        raise DumpSpaceError(conn, f"{folder} has {free // 2**20} MiB free, less than the "
                                   f"{need // 2**20 + 1} MiB a dump of {conn.database} may take",
                             "free space there, or set snapshot.dir to another folder")


def dump_plan(ctx: RunContext, folder: Path, suffix: str = "") -> DumpPlan:
    section = index_section(ctx, "snapshot")
    ext = "dump" if section.engine.value == "postgresql" else "sql"
    return DumpPlan(engine=section.engine.value, file=section.file, section=section.section,
                    database=section.database, path=folder / f"{section.database}{suffix}.{ext}")


def take_dump(host: Host, ctx: RunContext, plan: DumpPlan, staged: DumpTaken | None
              ) -> DumpTaken:
    """Dump the database, unless the staged dump is still current (nothing written since)."""
    section = index_section(ctx, "snapshot")
    conn = section.connection()
    if not host.files.exists(plan.path.parent):
        host.files.make_dir(plan.path.parent)
    print_ = fingerprint(host, section, section.database)
    writes = print_.writes if print_ is not None else None
    then = staged.fingerprint if staged else None
    if staged is not None and staged.sha256 and then is not None and then.writes is not None \
            and writes == then.writes and host.files.exists(staged.path) \
            and host.files.sha256(staged.path) == staged.sha256:
        return replace(staged, reused=True, fingerprint=print_ or then)
    try:
        done = host.databases.dump(conn, plan.path)
    except DatabaseError as exc:
        raise database_error(exc) from exc
    return DumpTaken(path=done.path, sha256=done.sha256, size=done.size,
                     seconds=round(done.seconds, 3), fingerprint=print_)


def stage_dump(host: Host, ctx: RunContext, plan: DumpPlan) -> DumpTaken:
    """The dump while the service runs: the row counter read first, so any write after it
    (during the dump or before the stop) shows as a difference after the stop."""
    section = index_section(ctx, "snapshot")
    conn = section.connection()
    writes = host.databases.writes(conn)
    if not host.files.exists(plan.path.parent):
        host.files.make_dir(plan.path.parent)
    try:
        done = host.databases.dump(conn, plan.path)
    except DatabaseError as exc:
        raise database_error(exc) from exc
    return DumpTaken(path=done.path, sha256=done.sha256, size=done.size,
                     seconds=round(done.seconds, 3), fingerprint=Fingerprint(writes=writes))


def restore_dump(host: Host, ctx: RunContext, plan: DumpPlan, taken: DumpTaken) -> str:
    """Undo: when the database changed since the dump, restore it into a fresh database and
    point the config there (the changed one is kept)."""
    section = index_database(ctx.config())
    if section is None:
        return "the database section is gone from the config: restore by hand"
    now = fingerprint(host, section, plan.database)
    if taken.fingerprint is not None and not changed(taken.fingerprint, now):
        return f"{plan.database} is as dumped: nothing to restore"
    conn = section.connection()
    name = aside_name(host, conn, plan.database, ctx.run_id, "restored")
    try:
        host.databases.restore(conn, taken.path, name, sha256=taken.sha256)
    except DatabaseError as exc:
        raise database_error(exc) from exc
    edit = DatabaseEdit(file=plan.file, section=plan.section, old=plan.database, new=name,
                        backup=Path(ctx.run_dir) / "config-backup" / f"snapshot-{plan.file.name}")
    point_config(host, ctx, edit)
    return (f"{plan.database} changed since the dump: restored {taken.path} into {name}, "
            f"{edit.file} points there ({plan.database} kept as it is, for inspection)")


def remove_partial(host: Host, plan: DumpPlan) -> None:
    """A killed dump leaves NAME.orchestrator-tmp (the dump's name appears only when done)."""
    tmp = plan.path.with_name(plan.path.name + ".orchestrator-tmp")
    if host.files.exists(tmp):
        host.files.remove([tmp], f"remove the unfinished dump {tmp}")
