"""The database port: read and change the PostgreSQL or MySQL database that holds an index.

Reads (`query`, `exists`, `size`, `owner`, `server`, `connected`) always
connect for real, read-only by what they run. Changes (`dump`, `restore`,
`clone`, `rename`, `drop`) go through the host's `Changes` recorder: in a dry
run they are recorded and never connect at all.

Everything runs through the database's own client tools (psql, pg_dump,
pg_restore; mariadb / mysql, mariadb-dump / mysqldump), never a Python driver.
Credentials reach them only through a 0600 file in a private 0700 folder
(PGPASSFILE, or MySQL's --defaults-extra-file), removed when the child ends:
never argv, never the environment of anything but that one child (which gets
only the file's path).

Every expected failure is a `DatabaseError` subclass that names the place the
connection came from (`Connection.origin`: the config file and section) and
carries the child's `Completed`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Protocol

from orchestrator.errors import InputError
from orchestrator.host.database_errors import (  # noqa: F401  (re-exported: the port's errors)
    ClientToolMissingError, CreateDatabaseDeniedError, DatabaseAuthError, DatabaseBusyError,
    DatabaseError, DatabaseExistsError, DatabaseMissingError, DatabaseUnreachableError,
    DumpSpaceError, OwnerMismatchError, UnsupportedError)
from orchestrator.host.changes import Changes
from orchestrator.host.durable import fsync_dir

# Names the tool creates: letters, digits, _ and $ (what the MySQL plugin accepts), 63 bytes
# (PostgreSQL's NAMEDATALEN - 1).
_NAME = re.compile(r"[A-Za-z0-9_$]{1,63}")


class Engine(Enum):
    POSTGRESQL = "postgresql"
    MYSQL = "mysql"


@dataclass(frozen=True)
class Connection:
    """Where and as whom to connect. `password` is a secret: never printed, never in argv."""

    engine: Engine
    host: str  # a host name or address; for PostgreSQL a folder means a Unix socket
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False, compare=False)
    socket: str | None = None  # MySQL: the Unix socket used when host is "localhost"
    origin: str = ""  # "FILE: PostgreSQL", for error messages

    def on(self, database: str) -> Connection:
        """The same server and role, another database."""
        return replace(self, database=database)

    @property
    def where(self) -> str:
        """Server address for messages (no credentials)."""
        if self.engine is Engine.MYSQL and self.socket and self.host in ("", "localhost"):
            return f"socket {self.socket}"
        if self.host.startswith("/"):
            return f"socket {self.host}/.s.PGSQL.{self.port}"
        return f"{self.host}:{self.port}"


def check_name(name: str) -> str:
    """Return `name` if the tool may create a database with it; InputError otherwise."""
    if not _NAME.fullmatch(name):
        raise InputError(f"database name {name!r} is not allowed",
                         hint="use 1 to 63 letters, digits, '_' or '$' (what the Orthanc "
                              "plugins accept)")
    return name


# -- results --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dump:
    """A dump file the port wrote (or would write, in a dry run: sha256 is None)."""

    path: Path
    engine: Engine
    database: str
    sha256: str | None
    size: int
    seconds: float

    def to_dict(self) -> dict:
        return {"path": str(self.path), "engine": self.engine.value, "database": self.database,
                "sha256": self.sha256, "size": self.size, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Session:
    """Someone connected to a database."""

    pid: int
    user: str
    application: str
    client: str


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about itself and about the connecting role."""

    version: str  # "15.18 (Debian 15.18-0+deb12u1)", "10.11.19-MariaDB-0+deb12u1"
    can_create_db: bool


# -- the port -------------------------------------------------------------------------------
class Client(Protocol):
    """What an engine adapter provides (host/postgresql.py, host/mysql.py)."""

    engine: Engine

    def query(self, conn: Connection, sql: str, params: dict[str, str] | None = None,
              *, timeout: float = 30.0) -> list[tuple[str, ...]]: ...
    def exists(self, conn: Connection, name: str) -> bool: ...
    def size(self, conn: Connection, name: str) -> int: ...
    def owner(self, conn: Connection, name: str) -> str | None: ...
    def server(self, conn: Connection) -> ServerFacts: ...
    def connected(self, conn: Connection, name: str) -> list[Session]: ...
    def dump(self, conn: Connection, path: Path, *, timeout: float) -> None: ...
    def create(self, conn: Connection, name: str) -> None: ...
    def restore(self, conn: Connection, dump: Path, name: str, *, timeout: float) -> None: ...
    def clone(self, conn: Connection, name: str, owner: str, *, timeout: float) -> None: ...
    def rename(self, conn: Connection, old: str, new: str) -> None: ...
    def drop(self, conn: Connection, name: str) -> None: ...


class Databases:
    """Read and change databases; changes through `Changes` (so a dry run never writes)."""

    def __init__(self, changes: Changes, clients: Sequence[Client]):
        self.changes = changes
        self.clients = {c.engine: c for c in clients}
        self._made: set[tuple[str, str]] = set()  # dry run: (where, name) that would exist
        self._gone: set[tuple[str, str]] = set()

    def client(self, conn: Connection) -> Client:
        return self.clients[conn.engine]

    # -- reads ---------------------------------------------------------------------------
    def query(self, conn: Connection, sql: str, params: dict[str, str] | None = None
              ) -> list[tuple[str, ...]]:
        """Rows of a read-only statement, each a tuple of strings (NULL as '')."""
        return self.client(conn).query(conn, sql, params)

    def exists(self, conn: Connection, name: str) -> bool:
        key = (conn.where, name)
        if key in self._gone:
            return False
        return key in self._made or self.client(conn).exists(conn, name)

    def size(self, conn: Connection, name: str | None = None) -> int:
        """Bytes the database takes on the server (0 if it would only exist after a dry run)."""
        name = name or conn.database
        if (conn.where, name) in self._made:
            return 0
        return self.client(conn).size(conn, name)

    def owner(self, conn: Connection, name: str | None = None) -> str | None:
        return self.client(conn).owner(conn, name or conn.database)

    def server(self, conn: Connection) -> ServerFacts:
        return self.client(conn).server(conn)

    def connected(self, conn: Connection, name: str | None = None) -> list[Session]:
        """Who is connected to the database (other than this check itself)."""
        return self.client(conn).connected(conn, name or conn.database)

    def writes(self, conn: Connection, name: str | None = None) -> int | None:
        """Rows written to the database so far (PostgreSQL's statistics), or None (MySQL).

        Equal before a dump and after the stop: nothing was written since the dump began.
        """
        if conn.engine is not Engine.POSTGRESQL or (conn.where, name or conn.database) in self._made:
            return None
        rows = self.client(conn).query(conn.on(MAINTENANCE), _WRITES, {"name": name or conn.database})
        return int(rows[0][0]) if rows and rows[0][0].isdigit() else None

    def busy(self, conn: Connection, name: str | None = None) -> bool:
        """Someone other than this check runs a statement on the database (a migration)."""
        sql, where = _BUSY[conn.engine], conn.on(MAINTENANCE) \
            if conn.engine is Engine.POSTGRESQL else conn
        rows = self.client(conn).query(where, sql, {"name": name or conn.database})
        return bool(rows) and rows[0][0] not in ("0", "")

    def creating(self, conn: Connection, name: str) -> bool:
        """A `CREATE DATABASE name` still runs on the server (its client may be gone)."""
        if conn.engine is not Engine.POSTGRESQL:
            return False
        rows = self.client(conn).query(conn.on(MAINTENANCE), _CREATING, {"name": name})
        return bool(rows) and rows[0][0] not in ("0", "")

    def require_dump_tools(self, conn: Connection) -> None:
        """ClientToolMissingError unless the dump and restore programs are installed (a read)."""
        wanted = {Engine.POSTGRESQL: (("pg_dump",), ("pg_restore",)),
                  Engine.MYSQL: (("mariadb-dump", "mysqldump"), ("mariadb", "mysql"))}
        client = self.client(conn)
        bindir = getattr(client, "bindir", None)
        for names in wanted[conn.engine]:
            found = [n for n in names if shutil.which(str(Path(bindir) / n) if bindir else n)]
            if not found:
                raise ClientToolMissingError(conn, f"{names[0]} is not installed",
                                             "install the database's client tools (Debian: "
                                             "postgresql-client or mariadb-client)")

    # -- changes -------------------------------------------------------------------------
    def dump(self, conn: Connection, path: Path, *, timeout: float = 3600.0) -> Dump:
        """Dump conn.database to `path` (written aside, then renamed); its SHA-256 recorded.

        Refuses (DumpSpaceError) when the folder has less free space than the
        database's size (twice it for MySQL's hex text), before anything is written.
        """
        path = Path(path)
        client = self.client(conn)
        need = self.size(conn)  # 0 for a database that only a dry run made
        if conn.engine is Engine.MYSQL:
            need *= 2  # a text dump writes attachments (BLOBs) as hex: twice their size
        self._check_space(conn, path.parent, need)
        tool = "pg_dump -Fc" if conn.engine is Engine.POSTGRESQL else \
            "mariadb-dump --single-transaction --routines --triggers"
        text = f"dump database {conn.database} to {path} with {tool} ({conn.where})"
        dry = Dump(path, conn.engine, conn.database, None, need, 0.0)
        return self.changes.apply(text, self._dump, client, conn, path, timeout,
                                  dry_result=dry)

    def restore(self, conn: Connection, dump: Path, name: str, *, sha256: str | None = None,
                timeout: float = 3600.0) -> None:
        """Restore `dump` into a new database `name` owned by conn.user (refused if it exists).

        With `sha256` (the one `dump` recorded), the file is checked first: a dump
        that changed since it was taken is refused before anything is created.
        """
        check_name(name)
        self._refuse_existing(conn, name)
        extra = " (utf8mb4_unicode_ci)" if conn.engine is Engine.MYSQL else ""
        self.changes.apply(f"restore {dump} into a new database {name}{extra} ({conn.where})",
                           self._restore, conn, Path(dump), name, sha256, timeout,
                           simulate=lambda: self._made.add((conn.where, name)))

    def clone(self, conn: Connection, name: str, *, timeout: float = 3600.0) -> None:
        """Copy conn.database into a new database `name` owned by conn.user.

        PostgreSQL: CREATE DATABASE name TEMPLATE old OWNER role, refused while
        anyone is connected to the old one; the owner is checked afterwards (a
        clone owned by another role breaks the next plugin upgrade). MySQL has
        no template: a dump restored into `name`.
        """
        check_name(name)
        self._refuse_existing(conn, name)
        busy = self.client(conn).connected(conn, conn.database)
        if busy and conn.engine is Engine.POSTGRESQL and not self.changes.dry:  # dry: no stop
            raise DatabaseBusyError(conn, f"cannot clone {conn.database}: {_who(busy)} "
                                          "connected to it", "stop every Orthanc using this "
                                                             "database first")
        self.changes.apply(f"clone database {conn.database} into {name} owned by {conn.user} "
                           f"({conn.where})", self._clone, conn, name, timeout,
                           simulate=lambda: self._made.add((conn.where, name)))

    def rename(self, conn: Connection, old: str, new: str) -> None:
        """Rename database `old` to `new` (no one may be connected to `old`)."""
        check_name(new)
        self._refuse_existing(conn, new)
        self.changes.apply(f"rename database {old} to {new} ({conn.where})",
                           self.client(conn).rename, conn, old, new,
                           simulate=lambda: (self._gone.add((conn.where, old)),
                                             self._made.add((conn.where, new))))

    def drop(self, conn: Connection, name: str) -> None:
        """Drop database `name` (only ever one the tool made)."""
        self.changes.apply(f"drop database {name} ({conn.where})",
                           self.client(conn).drop, conn, name,
                           simulate=lambda: self._gone.add((conn.where, name)))

    # -- helpers ---------------------------------------------------------------------------
    def _refuse_existing(self, conn: Connection, name: str) -> None:
        if self.exists(conn, name):
            raise DatabaseExistsError(conn, f"a database named {name} already exists on "
                                            f"{conn.where}", "choose another name, or drop it "
                                                             "if it is an old copy")

    def _check_space(self, conn: Connection, folder: Path, need: int) -> None:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free < need:
            raise DumpSpaceError(conn, f"{folder} has {free // 2**20} MiB free, less than the "
                                       f"{need // 2**20} MiB the dump of {conn.database} may take",
                                 "free space there or dump to another folder")

    def _dump(self, client: Client, conn: Connection, path: Path, timeout: float) -> Dump:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".orchestrator-tmp")
        started = time.monotonic()
        try:
            client.dump(conn, tmp, timeout=timeout)
            digest = _sha256(tmp, sync=True)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:
            fsync_dir(path.parent)
        except OSError:
            pass  # the dump itself is synced; a folder that cannot be opened stays as it is
        return Dump(path, conn.engine, conn.database, digest, path.stat().st_size,
                    time.monotonic() - started)

    def _restore(self, conn: Connection, dump: Path, name: str, sha256: str | None,
                 timeout: float) -> None:
        if not dump.is_file():
            raise DatabaseError(conn, f"no dump at {dump}", "give the dump the snapshot wrote")
        if sha256 is not None and _sha256(dump) != sha256:
            raise DatabaseError(conn, f"{dump} changed since it was taken (SHA-256 differs)",
                                "restore from an intact copy of the dump")
        self.client(conn).restore(conn, dump, name, timeout=timeout)

    def _clone(self, conn: Connection, name: str, timeout: float) -> None:
        client = self.client(conn)
        client.clone(conn, name, conn.user, timeout=timeout)
        owner = client.owner(conn, name)
        if owner is not None and owner != conn.user:
            raise OwnerMismatchError(conn, f"the clone {name} is owned by {owner}, not {conn.user}",
                                     "ALTER DATABASE ... OWNER TO the plugin's role before "
                                     "Orthanc uses it")


MAINTENANCE = "postgres"  # statements about a PostgreSQL database connect here, not to it
_WRITES = ("SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
           "WHERE datname = :'name';")
_BUSY = {
    Engine.POSTGRESQL: "SELECT count(*) FROM pg_stat_activity WHERE datname = :'name' "
                       "AND state = 'active' AND pid <> pg_backend_pid();",
    Engine.MYSQL: "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                  "AND COMMAND <> 'Sleep' AND ID <> CONNECTION_ID();",
}
_CREATING = ("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
             "AND query ILIKE 'CREATE DATABASE %' AND query LIKE '%' || :'name' || '%' "
             "AND pid <> pg_backend_pid();")


def _who(sessions: list[Session]) -> str:
    return f"{len(sessions)} session(s) of {', '.join(sorted({s.user or '?' for s in sessions}))}"


def _sha256(path: Path, *, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()
