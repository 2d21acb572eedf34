"""The hazard table: what in a configuration, an index and a binary makes an upgrade unsafe.

`assess` is pure: facts in, hazards out, blockers first. Each code is a stable
string documented in docs/inspect.md; preflight refuses on any BLOCKER.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from collections.abc import Sequence

from orchestrator.host.databases import Engine
from orchestrator.orthanc.backends import DatabaseSection
from orchestrator.orthanc.binary import OrthancVersion, expected_schema, schema_is_known
from orchestrator.orthanc.config import OrthancConfig
from orchestrator.orthanc.index import IndexFacts
from orchestrator.orthanc.plugin_index import DatabaseIndexFacts, max_revision

# Orthanc 1.9.2 .. 1.12.7 deadlock on any SQLite --upgrade from these schemas (fixed in 1.12.8).
DEADLOCK_FIRST, DEADLOCK_LAST = (1, 9, 2), (1, 12, 7)
DEADLOCK_SCHEMAS = frozenset({3, 4, 5})
# From 1.12.0 Orthanc adds tables/columns to a schema-6 SQLite index at start (same version).
SILENT_CHANGES_FROM = (1, 12, 0)
TABLES_FROM_1_12 = ("Labels",)  # present once a 1.12+ binary has opened the index
BACKEND_PLUGIN_MARKERS = {"postgresql": "postgresql", "mysql": "mysql", "odbc": "odbc"}


class Severity(Enum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"


_ORDER = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Hazard:
    code: str
    severity: Severity
    message: str
    hint: str

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity.value, "message": self.message,
                "hint": self.hint}


def assess(config: OrthancConfig | None, index: IndexFacts | None,
           version: OrthancVersion | None, *, binary_error: str | None = None,
           backends: Sequence[DatabaseSection] = (), database: DatabaseIndexFacts | None = None,
           plugin_version: str | None = None,
           target_plugin_version: str | None = None,
           dump_free: int | None = None) -> list[Hazard]:
    """Return the hazards these facts show, blockers first (stable order within a severity).

    `binary_error`: why the binary's version could not be read, if it was tried.
    `backends` (orthanc/backends.py), `database` (orthanc/plugin_index.py) and the
    installed / planned index plugin versions add the database hazards;
    `dump_free` (bytes free where the plan keeps its dumps) adds the space check.
    """
    found: list[Hazard] = []
    if config is not None:
        found += _config_hazards(config)
    if backends:
        found += database_hazards(config, backends, database, plugin_version,
                                  target_plugin_version, dump_free=dump_free)
    sqlite = config is None or config.index_backend == "sqlite"
    if index is not None and sqlite:
        found += _index_hazards(index)
    if binary_error is not None:
        found.append(Hazard("binary-unusable", Severity.WARNING, binary_error,
                            "check --binary: it must be the Orthanc server and run here"))
    elif version is None:
        found.append(Hazard("binary-unknown", Severity.INFO,
                            "no Orthanc binary was inspected",
                            "pass --binary PATH to check the version hazards (upgrade-deadlock, "
                            "schema-too-new)"))
    else:
        found += _version_hazards(version, index if sqlite else None, sqlite)
    return sorted(found, key=lambda h: _ORDER[h.severity])


def _config_hazards(c: OrthancConfig) -> list[Hazard]:
    out: list[Hazard] = []
    if c.index_backend != "sqlite":
        dumped = c.index_backend in ("postgresql", "mysql")
        out.append(Hazard("non-sqlite-index", Severity.WARNING,
                          f"the index is in {c.index_backend}: there is no index file to snapshot",
                          "the snapshot step dumps it (pg_dump -Fc / mariadb-dump --routines) "
                          "and relocate: {database: NEW} clones it" if dumped else
                          "a rollback needs a database dump taken first"))
        names = [p.name.lower() for p in c.plugin_files]
        marker = BACKEND_PLUGIN_MARKERS.get(c.index_backend, c.index_backend)
        if not any(marker in n for n in names):
            out.append(Hazard("backend-plugin-missing", Severity.WARNING,
                              f"{c.index_backend} is enabled but no {c.index_backend} plugin was "
                              "found in Plugins: Orthanc would silently fall back to SQLite",
                              "check the Plugins folders (Debian: the plugin package's .so)"))
    if c.storage_backend != "filesystem":
        out.append(Hazard("non-filesystem-storage", Severity.WARNING,
                          f"attachments are stored in {c.storage_backend}, not under "
                          f"{c.storage_dir}", "the snapshot cannot hard-link them; back them "
                                               "up with the backend's own tools"))
    for name in c.disabled_backends:
        section = name.split(".")[0]
        marker = BACKEND_PLUGIN_MARKERS.get(section.lower(), section.lower())
        if "." in name and any(marker in p.name.lower() for p in c.plugin_files):
            out.append(Hazard("backend-flag-not-boolean", Severity.BLOCKER,
                              f"{name} is not a JSON Boolean and the {section} plugin is loaded: "
                              "Orthanc stops at start (\"is not a Boolean as expected\")",
                              f"write true or false, without quotes, in \"{section}\""))
            continue
        out.append(Hazard("backend-not-enabled", Severity.WARNING,
                          f"{name} is present but not exactly true: Orthanc uses SQLite and the "
                          "filesystem, not " + section,
                          f"set \"EnableIndex\": true (a JSON Boolean) in \"{section}\" if the "
                          "data lives there; otherwise remove the section"))
    if c.max_storage_size or c.max_patient_count:
        limits = ", ".join(s for s in (
            f"MaximumStorageSize {c.max_storage_size} MB" if c.max_storage_size else "",
            f"MaximumPatientCount {c.max_patient_count}" if c.max_patient_count else "") if s)
        mode = c.max_storage_mode or "Recycle"
        effect = ("refuses new instances" if mode == "Reject" else
                  "deletes (recycles) the oldest patients")
        out.append(Hazard("size-limited", Severity.WARNING,
                          f"{limits}: when full, Orthanc {effect}",
                          "set both to 0 on a replication target, or copies vanish silently"))
    if not c.http_enabled:
        out.append(Hazard("http-disabled", Severity.WARNING,
                          "HttpServerEnabled is false: no REST API",
                          "health checks and replication need HTTP; enable it"))
    elif c.auth_enabled and not c.registered_users:
        if c.remote_access:
            out.append(Hazard("default-user", Severity.WARNING,
                              "remote access with authentication and no RegisteredUsers: "
                              "Orthanc creates the default user orthanc:orthanc",
                              "declare a user in RegisteredUsers"))
        else:
            out.append(Hazard("no-users", Severity.WARNING,
                              "authentication is on but RegisteredUsers is empty: every "
                              "request is refused", "declare a user in RegisteredUsers"))
    return out


def _index_hazards(ix: IndexFacts) -> list[Hazard]:
    if not ix.accessible:
        return [Hazard("index-unreadable", Severity.BLOCKER, f"{ix.path}: {ix.error}",
                       "run as root or as the user Orthanc runs as")]
    if not ix.exists:
        return [Hazard("index-missing", Severity.BLOCKER, f"no SQLite index at {ix.path}",
                       "check IndexDirectory: Orthanc (and --upgrade) would create a fresh, "
                       "empty database there and report success")]
    if ix.locked:
        who = f" (pid {ix.locked_by})" if ix.locked_by else ""
        return [Hazard("index-locked", Severity.WARNING,
                       f"an Orthanc process{who} holds {ix.path}: its version and counts "
                       "cannot be read", "stop the service to read them; an upgrade stops it")]
    out: list[Hazard] = []
    if ix.wal_pending:
        out.append(Hazard("index-not-clean", Severity.WARNING,
                          "index-wal holds changes not yet written to the index: the last "
                          "Orthanc did not stop cleanly",
                          "copy index-wal with the index; start and stop Orthanc once to fold it in"))
    if ix.error:
        out.append(Hazard("index-unreadable", Severity.BLOCKER, f"{ix.path}: {ix.error}",
                          "is IndexDirectory right? is this an Orthanc SQLite index?"))
    elif ix.schema_version is not None and ix.schema_version <= 2:
        out.append(Hazard("schema-too-old", Severity.BLOCKER,
                          f"the index is at schema {ix.schema_version}: --upgrade cannot read it",
                          "only replication moves this data: run an old Orthanc on it and "
                          "`orchestrator replicate` into a fresh one"))
    return out


def _version_hazards(v: OrthancVersion, ix: IndexFacts | None, sqlite: bool) -> list[Hazard]:
    out: list[Hazard] = []
    expected = expected_schema(v)
    if not schema_is_known(v):
        out.append(Hazard("version-beyond-table", Severity.INFO,
                          f"Orthanc {v} is newer than the tool's schema table: schema "
                          f"{expected} is assumed", "check the release notes for a new "
                                                    "DatabaseVersion"))
    schema = ix.schema_version if ix is not None and ix.readable else None
    in_range = not v.is_mainline and DEADLOCK_FIRST <= (v.major, v.minor, v.patch) <= DEADLOCK_LAST
    if schema is not None and 2 < schema < expected:
        if sqlite and in_range and schema in DEADLOCK_SCHEMAS:
            out.append(Hazard("upgrade-deadlock", Severity.BLOCKER,
                              f"Orthanc {v} hangs forever on a SQLite --upgrade from schema "
                              f"{schema} (1.9.2 to 1.12.7 deadlock)",
                              "upgrade with Orthanc >= 1.12.8, or replicate into a fresh "
                              "database (`orchestrator replicate`)"))
        else:
            out.append(Hazard("upgrade-needed", Severity.WARNING,
                              f"the index is at schema {schema}, Orthanc {v} needs {expected}: "
                              "it will not start before `--upgrade`",
                              "run the upgrade step (5 to 6 re-reads every file: hours on a "
                              "large archive)"))
    if schema is not None and schema > expected:
        out.append(Hazard("schema-too-new", Severity.BLOCKER,
                          f"the index is at schema {schema}, newer than Orthanc {v} expects "
                          f"({expected})", "use a newer Orthanc binary; never downgrade an index"))
    if sqlite and schema == 6 and expected == 6:
        if v.is_mainline or v.at_least(*SILENT_CHANGES_FROM):
            out.append(Hazard("binary-upgrade-changes-index", Severity.WARNING,
                              f"Orthanc {v} adds tables and columns to a schema-6 SQLite index at "
                              "its first start, without changing the version",
                              "snapshot the index before the new binary opens it; rollback "
                              "restores that copy"))
        elif ix is not None and any(t in ix.tables for t in TABLES_FROM_1_12):
            out.append(Hazard("index-from-newer-binary", Severity.BLOCKER,
                              f"an Orthanc >= 1.12 has opened this index; Orthanc {v} would fail "
                              "every new store with HTTP 500", "use Orthanc >= 1.12, or restore "
                                                               "the snapshot taken before"))
    return out


def database_hazards(config: OrthancConfig | None, backends: Sequence[DatabaseSection],
                     db: DatabaseIndexFacts | None, plugin: str | None,
                     target: str | None = None, *, dump_free: int | None = None) -> list[Hazard]:
    """Hazards of an index or storage kept in PostgreSQL / MySQL (docs/databases.md)."""
    out: list[Hazard] = []
    for s in backends:
        if s.files_on_disk:
            out.append(Hazard("copied-index-shares-files", Severity.WARNING,
                              f"{s.place()}: the index is in {s.engine.value} but the attachments "
                              "are files: an Orthanc started on a copy of the database deletes "
                              "files the original still lists",
                              "never delete through a clone or restored copy while the original "
                              "may come back; hard-link the storage folder for the copy"))
    if config is not None:
        for entry in config.plugins:
            if not any(str(f) == entry or str(f.parent) == entry for f in config.plugin_files):
                out.append(Hazard("plugin-not-found", Severity.WARNING,
                                  f"Plugins lists {entry}, where no plugin library was found",
                                  "check the path (Debian: /usr/share/orthanc/plugins)"))
    index = next((s for s in backends if s.index), None)
    if index is None or db is None:
        return out
    if not db.reachable:
        out.append(Hazard("database-unreachable", Severity.BLOCKER, _placed(index, db.error),
                          "check the section's Host, Port, Username and Password"))
        return out
    if db.error:
        out.append(Hazard("database-unreadable", Severity.BLOCKER, _placed(index, db.error),
                          "check Database in the section"))
        return out
    out += _revision_hazards(index, db, plugin, target)
    if db.server is not None and not db.server.can_create_db and index.engine is Engine.POSTGRESQL:
        out.append(Hazard("role-cannot-create-db", Severity.WARNING,
                          f"role {index.user} has no CREATEDB: a relocate (clone) or a restore "
                          "into a fresh database is refused", f"ALTER ROLE {index.user} CREATEDB"))
    need = (db.size or 0) * (2 if index.engine is Engine.MYSQL else 1)
    if dump_free is not None and dump_free < need:
        out.append(Hazard("dump-space", Severity.BLOCKER,
                          f"{dump_free // 2**20} MiB free for the dumps, less than the "
                          f"{need // 2**20} MiB a dump of {db.database} may take",
                          "free space there or keep the dumps in another folder"))
    if db.in_use:
        out.append(Hazard("database-in-use", Severity.INFO,
                          f"an Orthanc holds the plugin's lock on {db.database}",
                          "a clone needs every node stopped; a dump works online"))
    return out


def _placed(s: DatabaseSection, error: str | None) -> str:
    """The port's message names its place already ("FILE: PostgreSQL.Host: ..."): once only."""
    text = error or "unknown error"
    return text if text.startswith(s.place()) else f"{s.place()}: {text}"


def _revision_hazards(s: DatabaseSection, db: DatabaseIndexFacts, plugin: str | None,
                      target: str | None) -> list[Hazard]:
    out: list[Hazard] = []
    if db.revision is None:
        return out
    for label, version in (("installed", plugin), ("planned", target)):
        accepts = max_revision(s.engine, version)
        if accepts is not None and db.revision > accepts:
            code = "plugin-revision-too-new" if label == "installed" else \
                "plugin-downgrade-meets-newer-revision"
            out.append(Hazard(code, Severity.BLOCKER,
                              f"the {s.engine.value} index is at revision {db.revision}; the "
                              f"{label} plugin {version} accepts at most {accepts}: Orthanc "
                              "will not start", "restore the dump taken before the newer plugin "
                                                "touched the database (MySQL cannot go back "
                                                "otherwise)"))
    now, then = max_revision(s.engine, plugin), max_revision(s.engine, target)
    if then is not None and now is not None and then > db.revision:
        out.append(Hazard("plugin-migrates-on-start", Severity.WARNING,
                          f"plugin {target} moves the index from revision {db.revision} to "
                          f"{then} at its first ordinary start (not through --upgrade)",
                          "dump or clone the database before the new plugin starts; stop every "
                          "node that shares it"))
    return out
