"""Facts about an index kept in PostgreSQL or MySQL by an Orthanc database plugin.

Read through the database port (the database's own client, read-only
statements), the same way whether Orthanc runs or not:
- GlobalProperties 1 is the schema version (always 6), 4 the plugin's
  "revision" (GlobalProperty_DatabasePatchLevel in the plugins' sources). An
  older plugin refuses a newer revision at start.
- Resources.resourceType follows the plugin SDK: 0 patient, 1 study, 2 series,
  3 instance (the SQLite index of the core counts from 1).
- The plugin's advisory lock (PostgreSQL lock 42, MySQL `<db>.orthanc_index_lock`)
  is held while an Orthanc with `"Lock": true` uses the database.
- PostgreSQL folds unquoted names to lower case (`globalproperties`); MySQL
  keeps the plugin's spelling (`GlobalProperties`), case-sensitive on Linux.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from orchestrator.host.databases import (
    DatabaseError, Databases, Engine, ServerFacts, Session)
from orchestrator.orthanc.backends import DatabaseSection, plugin_version, read_backends
from orchestrator.orthanc.config import OrthancConfig

SCHEMA_PROPERTY, REVISION_PROPERTY = 1, 4
LEVELS = {0: "patients", 1: "studies", 2: "series", 3: "instances"}
# Highest revision each plugin version accepts (from the sources: MySQL refuses any other;
# PostgreSQL 4.0 and 5.0 require exactly 1).
MAX_REVISION = {
    (Engine.MYSQL, "4.0"): 5, (Engine.MYSQL, "4.1"): 6, (Engine.MYSQL, "4.2"): 6,
    (Engine.MYSQL, "4.3"): 6, (Engine.MYSQL, "5.0"): 7,
    (Engine.POSTGRESQL, "4.0"): 1, (Engine.POSTGRESQL, "5.0"): 1,
}

_TABLES = {
    Engine.POSTGRESQL: (
        "SELECT 't', tablename, '' FROM pg_tables WHERE schemaname = current_schema() "
        "UNION ALL SELECT 'l', count(*)::text, '' FROM pg_locks WHERE locktype = 'advisory' "
        "AND classid = 0 AND objid = 42 AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database());"),
    Engine.MYSQL: (
        "SELECT 't', TABLE_NAME, '' FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() "
        "UNION ALL SELECT 'l', IS_USED_LOCK(CONCAT(DATABASE(), '.orthanc_index_lock')) "
        "IS NOT NULL, '';"),
}
_INDEX = {
    Engine.POSTGRESQL: (
        "SELECT 'p', property::text, value FROM globalproperties WHERE property IN (1, 4) "
        "UNION ALL SELECT 'r', resourcetype::text, count(*)::text FROM resources "
        "GROUP BY resourcetype;"),
    Engine.MYSQL: (
        "SELECT 'p', property, value FROM GlobalProperties WHERE property IN (1, 4) "
        "UNION ALL SELECT 'r', resourceType, COUNT(*) FROM Resources GROUP BY resourceType;"),
}


@dataclass(frozen=True)
class DatabaseIndexFacts:
    """What the index database says (None where it could not be read; `error` says why)."""

    engine: Engine
    database: str
    where: str
    reachable: bool = False
    error: str | None = None
    server: ServerFacts | None = None
    size: int | None = None
    schema_version: int | None = None
    revision: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    tables: tuple[str, ...] = ()
    in_use: bool | None = None  # the plugin's lock is held: an Orthanc runs on it
    sessions: tuple[Session, ...] = ()

    @property
    def is_orthanc(self) -> bool:
        return any(t.lower() == "globalproperties" for t in self.tables)

    @property
    def has_labels(self) -> bool:
        """A plugin >= 5.0 has opened this database (it adds the labels table)."""
        return any(t.lower() == "labels" for t in self.tables)

    def to_dict(self) -> dict:
        return {"engine": self.engine.value, "database": self.database, "where": self.where,
                "reachable": self.reachable, "error": self.error,
                "server_version": self.server.version if self.server else None,
                "can_create_db": self.server.can_create_db if self.server else None,
                "size": self.size, "schema_version": self.schema_version,
                "revision": self.revision, "counts": dict(self.counts),
                "tables": list(self.tables), "in_use": self.in_use,
                "has_labels": self.has_labels,
                "sessions": [{"pid": s.pid, "user": s.user, "application": s.application,
                              "client": s.client} for s in self.sessions]}


def parse_tables(rows: list[tuple[str, ...]]) -> tuple[tuple[str, ...], bool]:
    """(table names, lock held) from the tagged rows of the tables query."""
    tables = tuple(sorted(r[1] for r in rows if r[0] == "t"))
    locked = any(r[0] == "l" and r[1] not in ("0", "") for r in rows)
    return tables, locked


def parse_index(rows: list[tuple[str, ...]]) -> tuple[int | None, int | None, dict[str, int]]:
    """(schema version, revision, counts per level) from the tagged rows of the index query."""
    props = {int(r[1]): r[2].strip() for r in rows if r[0] == "p" and r[1].strip().isdigit()}
    counts = {name: 0 for name in LEVELS.values()}
    for r in rows:
        if r[0] == "r" and r[1].isdigit() and int(r[1]) in LEVELS:
            counts[LEVELS[int(r[1])]] = int(r[2])

    def number(key: int) -> int | None:
        value = props.get(key, "")
        return int(value) if value.isdigit() else None

    return number(SCHEMA_PROPERTY), number(REVISION_PROPERTY), counts


def read_database_index(section: DatabaseSection, databases: Databases) -> DatabaseIndexFacts:
    """Read the facts of `section`'s database; an unreachable server gives facts with `error`."""
    conn = section.connection()
    base = DatabaseIndexFacts(section.engine, section.database, conn.where)
    try:
        server = databases.server(conn)
    except DatabaseError as exc:
        return _with(base, error=exc.message)
    facts = _with(base, reachable=True, server=server)
    try:
        if not databases.exists(conn, conn.database):
            return _with(facts, error=f"database {conn.database} does not exist")
        size = databases.size(conn)
        sessions = tuple(databases.connected(conn))
        tables, locked = parse_tables(databases.query(conn, _TABLES[conn.engine]))
        facts = _with(facts, size=size, sessions=sessions, tables=tables, in_use=locked)
        if not facts.is_orthanc:
            return _with(facts, error="no GlobalProperties table: not (yet) an Orthanc index")
        schema, revision, counts = parse_index(databases.query(conn, _INDEX[conn.engine]))
        return _with(facts, schema_version=schema, revision=revision, counts=counts)
    except DatabaseError as exc:
        return _with(facts, error=exc.message)


def read_index_tables(section: DatabaseSection, databases: Databases
                      ) -> tuple[tuple[str, ...], int | None, dict[str, int]]:
    """(tables, revision, counts) in two statements: the cheap fingerprint of an index
    database (DatabaseError when it cannot be read)."""
    conn = section.connection()
    tables, _ = parse_tables(databases.query(conn, _TABLES[conn.engine]))
    if not any(t.lower() == "globalproperties" for t in tables):
        return tables, None, {}
    _, revision, counts = parse_index(databases.query(conn, _INDEX[conn.engine]))
    return tables, revision, counts


def backend_plugin(system: dict) -> tuple[Engine | None, str | None]:
    """(engine, version) of the index plugin from `GET /system`'s DatabaseBackendPlugin.

    Orthanc gives the library's path (`/usr/lib/orthanc/libOrthancPostgreSQLIndex.so.4.0`),
    or null for its own SQLite index.
    """
    path = system.get("DatabaseBackendPlugin")
    if not isinstance(path, str) or not path:
        return None, None
    name = path.replace("\\", "/").rsplit("/", 1)[-1].lower()
    engine = next((e for e, lib in (("postgresql", "postgresqlindex"), ("mysql", "mysqlindex"))
                   if lib in name), None)
    m = re.search(r"\.so\.(\d+(?:\.\d+)*)$", name)
    return (Engine(engine) if engine else None), (m.group(1) if m else None)


def max_revision(engine: Engine, plugin_version: str | None) -> int | None:
    """The highest revision a plugin version accepts, when the table knows it."""
    if plugin_version is None:
        return None
    major_minor = ".".join(plugin_version.split(".")[:2])
    return MAX_REVISION.get((engine, major_minor))


def _with(facts: DatabaseIndexFacts, **changes) -> DatabaseIndexFacts:
    return replace(facts, **changes)


@dataclass(frozen=True)
class DatabaseView:
    """What `inspect` and preflight show of a database-backed site."""

    sections: tuple[DatabaseSection, ...]
    facts: DatabaseIndexFacts | None  # None: the index is SQLite
    plugin_version: str | None  # the installed index plugin, from its library's name

    def hazard_args(self) -> dict:
        """Keyword arguments for hazards.assess."""
        return {"backends": self.sections, "database": self.facts,
                "plugin_version": self.plugin_version}

    def to_dict(self) -> dict:
        return {"sections": [s.to_dict() for s in self.sections],
                "index": self.facts.to_dict() if self.facts else None,
                "plugin_version": self.plugin_version}


def view_database(config: OrthancConfig, databases: Databases) -> DatabaseView:
    """Read the sections of `config` and, if one holds the index, its database's facts."""
    sections = read_backends(config)
    index = next((s for s in sections if s.index), None)
    if index is None:
        return DatabaseView(sections, None, None)
    return DatabaseView(sections, read_database_index(index, databases),
                        plugin_version(config, index.engine))
