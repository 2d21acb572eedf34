"""PostgreSQL through its client tools: psql, pg_dump, pg_restore.

Names and values reach SQL as psql variables (`-v name=value`, then `:'name'`
for a literal, `:"name"` for an identifier), so psql quotes them; the script
goes on stdin. The password goes in a 0600 PGPASSFILE in a private folder.
Statements about databases (exists, create, clone, rename, drop) connect to
the maintenance database `postgres`, never to the database they are about: a
template must have no one connected, and a rollback point is never touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.host.database_errors import (
    CreateDatabaseDeniedError, DatabaseAuthError, DatabaseBusyError, DatabaseError,
    DatabaseExistsError, DatabaseMissingError, DatabaseUnreachableError, run_tool)
from orchestrator.host.credential_files import secret_folder, write_secret
from orchestrator.host.databases import (
    Connection, Engine, ServerFacts, Session)
from orchestrator.host.runner import Runner

MAINTENANCE_DB = "postgres"
CONNECT_TIMEOUT = "10"  # seconds; libpq waits forever by default


def classify(stderr: str) -> tuple[type[DatabaseError], str, str] | None:
    """Map a PostgreSQL client's stderr to an error class, a message and a hint."""
    text = " ".join(stderr.split())
    if m := re.search(r'password authentication failed for user "([^"]*)"', text):
        return DatabaseAuthError, f"wrong password for role {m.group(1)}", \
            "check Password in the section (or the variable it names)"
    if "no password supplied" in text or "fe_sendauth" in text:
        return DatabaseAuthError, "the server wants a password and none is configured", \
            "set Password in the section"
    if m := re.search(r'role "([^"]*)" does not exist', text):
        return DatabaseAuthError, f"role {m.group(1)} does not exist on the server", \
            "check Username in the section"
    if re.search(r"could not connect|Connection refused|could not translate host name|"
                 r"timeout expired|No route to host|server closed the connection", text):
        return DatabaseUnreachableError, f"PostgreSQL is unreachable: {_first_line(stderr)}", \
            "is the server running? check Host and Port in the section"
    if "permission denied to create database" in text:
        return CreateDatabaseDeniedError, "the role may not create databases (no CREATEDB)", \
            "ALTER ROLE <role> CREATEDB as a superuser, or dump instead of cloning"
    if m := re.search(r'permission denied to copy database "([^"]*)"', text):
        return CreateDatabaseDeniedError, f"the role may not copy database {m.group(1)} " \
            "(it is not its owner)", "make the plugin's role the owner of the database"
    if m := re.search(r'database "([^"]*)" already exists', text):
        return DatabaseExistsError, f"a database named {m.group(1)} already exists", \
            "choose another name"
    if m := re.search(r'database "([^"]*)" is being accessed by other users', text):
        return DatabaseBusyError, f"database {m.group(1)} is in use by other sessions", \
            "stop every Orthanc (and other client) using it first"
    if m := re.search(r'database "([^"]*)" does not exist', text):
        return DatabaseMissingError, f"database {m.group(1)} does not exist", \
            "check Database in the section"
    return None


def _first_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no answer"


def parse_rows(stdout: str) -> list[tuple[str, ...]]:
    """Rows of `psql -A -t -F <TAB>` output."""
    return [tuple(line.split("\t")) for line in stdout.splitlines() if line != ""]


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


class PostgreSQLClient:
    """The PostgreSQL adapter of the database port."""

    engine = Engine.POSTGRESQL

    def __init__(self, runner: Runner, bindir: str | None = None):
        self.runner = runner
        self.bindir = bindir  # a folder holding psql/pg_dump/pg_restore, else found in PATH

    def _tool(self, name: str) -> str:
        return str(Path(self.bindir) / name) if self.bindir else name

    @contextmanager
    def _env(self, conn: Connection) -> Iterator[dict[str, str]]:
        env = {"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT, "PGAPPNAME": "orchestrator"}
        with secret_folder() as folder:
            line = f"*:*:*:{_pgpass_field(conn.user)}:{_pgpass_field(conn.password)}\n"
            env["PGPASSFILE"] = str(write_secret(folder / "pgpass", line))
            yield env

    def _target(self, conn: Connection, database: str) -> list[str]:
        return ["-h", conn.host, "-p", str(conn.port), "-U", conn.user, "-w",
                f"--dbname={database}"]

    def _psql(self, conn: Connection, database: str, sql: str, params: dict[str, str] | None,
              timeout: float) -> list[tuple[str, ...]]:
        argv = [self._tool("psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                "-v", "ON_ERROR_STOP=1", *self._target(conn, database)]
        for key, value in (params or {}).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-f", "-"]
        with self._env(conn) as env:
            done = run_tool(self.runner, conn, argv, classify, timeout=timeout, env=env,
                            input=sql)
        return parse_rows(done.stdout)

    # -- reads ---------------------------------------------------------------------------
    def query(self, conn: Connection, sql: str, params: dict[str, str] | None = None, *,
              timeout: float = 30.0) -> list[tuple[str, ...]]:
        return self._psql(conn, conn.database, sql, params, timeout)

    def exists(self, conn: Connection, name: str) -> bool:
        return bool(self._psql(conn, MAINTENANCE_DB,
                               "SELECT 1 FROM pg_database WHERE datname = :'name';",
                               {"name": name}, 30.0))

    def size(self, conn: Connection, name: str) -> int:
        rows = self._psql(conn, MAINTENANCE_DB, "SELECT pg_database_size(datname) FROM "
                          "pg_database WHERE datname = :'name';", {"name": name}, 30.0)
        if not rows:
            raise DatabaseMissingError(conn, f"database {name} does not exist",
                                       "check Database in the section")
        return int(rows[0][0])

    def owner(self, conn: Connection, name: str) -> str | None:
        rows = self._psql(conn, MAINTENANCE_DB, "SELECT pg_get_userbyid(datdba) FROM "
                          "pg_database WHERE datname = :'name';", {"name": name}, 30.0)
        return rows[0][0] if rows else None

    def server(self, conn: Connection) -> ServerFacts:
        rows = self._psql(conn, MAINTENANCE_DB,
                          "SELECT current_setting('server_version'), "
                          "(rolcreatedb OR rolsuper)::int FROM pg_roles "
                          "WHERE rolname = current_user;", None, 30.0)
        return ServerFacts(version=rows[0][0], can_create_db=rows[0][1] == "1")

    def connected(self, conn: Connection, name: str) -> list[Session]:
        rows = self._psql(conn, MAINTENANCE_DB,
                          "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), "
                          "coalesce(host(client_addr), 'local') FROM pg_stat_activity "
                          "WHERE datname = :'name' AND pid <> pg_backend_pid();",
                          {"name": name}, 30.0)
        return [Session(int(r[0]), r[1], r[2], r[3]) for r in rows]

    # -- changes ---------------------------------------------------------------------------
    def dump(self, conn: Connection, path: Path, *, timeout: float) -> None:
        argv = [self._tool("pg_dump"), "-Fc", "-f", str(path), *self._target(conn, conn.database)]
        with self._env(conn) as env:
            run_tool(self.runner, conn, argv, classify, timeout=timeout, env=env)

    def create(self, conn: Connection, name: str) -> None:
        self._psql(conn, MAINTENANCE_DB, 'CREATE DATABASE :"name" OWNER :"owner";',
                   {"name": name, "owner": conn.user}, 120.0)

    def restore(self, conn: Connection, dump: Path, name: str, *, timeout: float) -> None:
        """Create `name` owned by conn.user and restore into it; drop it again on failure."""
        self.create(conn, name)
        argv = [self._tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
                "-j", "2", *self._target(conn, name), str(dump)]
        try:
            with self._env(conn) as env:
                run_tool(self.runner, conn, argv, classify, timeout=timeout, env=env)
        except BaseException:
            self.drop(conn, name)
            raise

    def clone(self, conn: Connection, name: str, owner: str, *, timeout: float) -> None:
        self._psql(conn, MAINTENANCE_DB, 'CREATE DATABASE :"name" TEMPLATE :"old" OWNER :"owner";',
                   {"name": name, "old": conn.database, "owner": owner}, timeout)

    def rename(self, conn: Connection, old: str, new: str) -> None:
        self._psql(conn, MAINTENANCE_DB, 'ALTER DATABASE :"old" RENAME TO :"new";',
                   {"old": old, "new": new}, 120.0)

    def drop(self, conn: Connection, name: str) -> None:
        self._psql(conn, MAINTENANCE_DB, 'DROP DATABASE IF EXISTS :"name";', {"name": name}, 120.0)
