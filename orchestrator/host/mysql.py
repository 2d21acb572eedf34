"""MySQL / MariaDB through its client tools: mariadb (mysql), mariadb-dump (mysqldump).

The user, password, host, port and socket go in a 0600 option file passed as
`--defaults-extra-file` (the first argument, as the clients require). Names
reach SQL only after `check_name` (letters, digits, `_`, `$`: what the Orthanc
plugin itself accepts), quoted with backquotes. A dump keeps the stored
procedures and triggers (`--routines --triggers`: without them the plugin's
`CreateInstance` procedure is lost and every store fails), and is restored into
a `utf8mb4_unicode_ci` database (a default-collation one fails every write with
"Illegal mix of collations"). MySQL has no database owner and no rename.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.host.database_errors import (
    CreateDatabaseDeniedError, DatabaseAuthError, DatabaseError, DatabaseExistsError,
    DatabaseMissingError, DatabaseUnreachableError, UnsupportedError, run_tool)
from orchestrator.host.credential_files import secret_folder, write_secret
from orchestrator.host.databases import (
    Connection, Engine, ServerFacts, Session, check_name)
from orchestrator.host.runner import Runner

CHARSET, COLLATION = "utf8mb4", "utf8mb4_unicode_ci"
CONNECT_TIMEOUT = 10


def classify(stderr: str) -> tuple[type[DatabaseError], str, str] | None:
    """Map a MySQL/MariaDB client's stderr (its error number) to a class, message, hint."""
    m = re.search(r"(?:ERROR|error:?)\s*\(?(\d{4})\)?", stderr)
    code = int(m.group(1)) if m else None
    last = " ".join(stderr.split())[-200:]
    if code in (2002, 2003, 2005, 2006, 2013):
        return DatabaseUnreachableError, f"MySQL is unreachable: {last}", \
            "is the server running? check Host, Port and UnixSocket in the section"
    if code == 1045:
        return DatabaseAuthError, "the server refused the user name or password", \
            "check Username and Password in the section (or the variable it names)"
    if code == 1044:
        return CreateDatabaseDeniedError, f"access denied: {last}", \
            "GRANT the plugin's user CREATE (and ALL) on the new database's name"
    if code == 1007:
        return DatabaseExistsError, "the database already exists", "choose another name"
    if "insufficient privileges to SHOW CREATE" in stderr:
        return DatabaseError, f"the user cannot read a stored procedure: {last}", \
            "dump as the plugin's own user (the procedures' definer)"
    if code == 1049:
        return DatabaseMissingError, f"unknown database: {last}", "check Database in the section"
    return None


def parse_rows(stdout: str) -> list[tuple[str, ...]]:
    """Rows of `mariadb --batch --skip-column-names` output (NULL as '')."""
    return [tuple("" if v == "NULL" else v for v in line.split("\t"))
            for line in stdout.splitlines() if line != ""]


def _option(value: str) -> str:
    """A value for an option file, double-quoted with backslash escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def option_file(conn: Connection) -> str:
    """The [client] section that carries the connection and its password."""
    lines = ["[client]", f"user={_option(conn.user)}", f"password={_option(conn.password)}",
             f"host={_option(conn.host or 'localhost')}", f"port={conn.port}"]
    if conn.socket:
        lines.append(f"socket={_option(conn.socket)}")
    return "\n".join(lines) + "\n"


def _q(name: str) -> str:
    return f"`{check_name(name)}`"


class MySQLClient:
    """The MySQL / MariaDB adapter of the database port."""

    engine = Engine.MYSQL

    def __init__(self, runner: Runner):
        self.runner = runner

    @staticmethod
    def _tool(*names: str) -> str:
        return next((n for n in names if shutil.which(n)), names[0])

    @contextmanager
    def _options(self, conn: Connection) -> Iterator[str]:
        with secret_folder() as folder:
            yield f"--defaults-extra-file={write_secret(folder / 'client.cnf', option_file(conn))}"

    def _sql(self, conn: Connection, database: str | None, sql: str,
             timeout: float = 30.0) -> list[tuple[str, ...]]:
        with self._options(conn) as opt:
            argv = [self._tool("mariadb", "mysql"), opt, "--batch", "--skip-column-names",
                    f"--connect-timeout={CONNECT_TIMEOUT}"]
            if database:
                argv.append(f"--database={database}")
            done = run_tool(self.runner, conn, argv, classify, timeout=timeout, input=sql)
        return parse_rows(done.stdout)

    # -- reads ---------------------------------------------------------------------------
    def query(self, conn: Connection, sql: str, params: dict[str, str] | None = None, *,
              timeout: float = 30.0) -> list[tuple[str, ...]]:
        for key, value in (params or {}).items():  # names only: check_name'd, then quoted
            sql = sql.replace(f":'{key}'", f"'{check_name(value)}'")
        return self._sql(conn, conn.database, sql, timeout)

    def exists(self, conn: Connection, name: str) -> bool:
        return bool(self._sql(conn, None, "SELECT 1 FROM information_schema.SCHEMATA WHERE "
                                          f"SCHEMA_NAME = '{check_name(name)}';"))

    def size(self, conn: Connection, name: str) -> int:
        if not self.exists(conn, name):
            raise DatabaseMissingError(conn, f"database {name} does not exist",
                                       "check Database in the section")
        rows = self._sql(conn, None, "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM "
                                     "information_schema.TABLES WHERE TABLE_SCHEMA = "
                                     f"'{check_name(name)}';")
        return int(rows[0][0])

    def owner(self, conn: Connection, name: str) -> str | None:
        return None  # MySQL databases have no owner

    def server(self, conn: Connection) -> ServerFacts:
        rows = self._sql(conn, None,
                         "SELECT VERSION(), (SELECT COUNT(*) FROM "
                         "information_schema.USER_PRIVILEGES "
                         "WHERE PRIVILEGE_TYPE = 'CREATE' AND GRANTEE = CONCAT(\"'\", "
                         "SUBSTRING_INDEX(CURRENT_USER(), '@', 1), \"'@'\", "
                         "SUBSTRING_INDEX(CURRENT_USER(), '@', -1), \"'\"));")
        return ServerFacts(version=rows[0][0], can_create_db=rows[0][1] != "0")

    def connected(self, conn: Connection, name: str) -> list[Session]:
        """Sessions on `name` (all of them with the PROCESS privilege, else only the role's)."""
        rows = self._sql(conn, None, "SELECT ID, USER, COMMAND, HOST FROM "
                                     "information_schema.PROCESSLIST WHERE DB = "
                                     f"'{check_name(name)}' AND ID <> CONNECTION_ID();")
        return [Session(int(r[0]), r[1], r[2], r[3]) for r in rows]

    # -- changes ---------------------------------------------------------------------------
    def dump(self, conn: Connection, path: Path, *, timeout: float) -> None:
        with self._options(conn) as opt:
            argv = [self._tool("mariadb-dump", "mysqldump"), opt, "--single-transaction",
                    "--routines", "--triggers", "--hex-blob", f"--result-file={path}",
                    conn.database]  # without --databases: no CREATE DATABASE / USE inside
            run_tool(self.runner, conn, argv, classify, timeout=timeout)

    def create(self, conn: Connection, name: str) -> None:
        self._sql(conn, None, f"CREATE DATABASE {_q(name)} CHARACTER SET {CHARSET} "
                              f"COLLATE {COLLATION};", 120.0)

    def restore(self, conn: Connection, dump: Path, name: str, *, timeout: float) -> None:
        """Create `name` (utf8mb4_unicode_ci) and load the dump; drop it again on failure."""
        self.create(conn, name)
        self._load(conn, dump, name, timeout)

    def clone(self, conn: Connection, name: str, owner: str, *, timeout: float) -> None:
        """MySQL has no template databases: create `name` first (so a refusal comes before
        any work), then dump the old one and load it there."""
        self.create(conn, name)
        folder = Path(tempfile.mkdtemp(prefix="orchestrator-clone-"))
        try:
            try:
                self.dump(conn, folder / "clone.sql", timeout=timeout)
            except BaseException:
                self.drop(conn, name)
                raise
            self._load(conn, folder / "clone.sql", name, timeout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _load(self, conn: Connection, dump: Path, name: str, timeout: float) -> None:
        try:
            if "\n" in str(dump):
                raise DatabaseError(conn, f"cannot load {dump!r}", "rename the dump file")
            self._sql(conn, name, f"source {dump}\n", timeout)
        except BaseException:
            self.drop(conn, name)
            raise

    def rename(self, conn: Connection, old: str, new: str) -> None:
        raise UnsupportedError(conn, "MySQL cannot rename a database",
                               "keep the name, or dump it and restore under the new name")

    def drop(self, conn: Connection, name: str) -> None:
        self._sql(conn, None, f"DROP DATABASE IF EXISTS {_q(name)};", 120.0)
