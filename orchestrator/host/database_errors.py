"""The database port's errors: one class per thing the operator fixes differently.

Each message starts with the place in the configuration the connection came
from and, where one key is to blame, that key (`FILE: PostgreSQL.Password: ...`),
and each carries a hint and the client's `Completed` (argv without secrets, exit
code, stderr).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.errors import CommandError, Completed, RefusedError
from orchestrator.host.runner import Runner

if TYPE_CHECKING:
    from orchestrator.host.databases import Connection


class DatabaseError(RefusedError):
    """A database operation the operator can fix; names the config place and the server."""

    key: str | None = None  # the section's key to check first, named in the message

    def __init__(self, conn: Connection | None, message: str, hint: str | None = None, *,
                 completed: Completed | None = None):
        place = ""
        if conn is not None and conn.origin:
            place = f"{conn.origin}.{self.key}: " if self.key else f"{conn.origin}: "
        super().__init__(place + message, hint, completed=completed)
        self.connection = conn


class DatabaseUnreachableError(DatabaseError):
    """No server answers at the configured address."""

    key = "Host"


class DatabaseAuthError(DatabaseError):
    """The server refused the user name or password."""

    key = "Password"


class CreateDatabaseDeniedError(DatabaseError):
    """The role may not create databases (no CREATEDB)."""

    key = "Username"


class DatabaseExistsError(DatabaseError):
    """The target database name is taken."""


class DatabaseMissingError(DatabaseError):
    """The database named does not exist."""

    key = "Database"


class DatabaseBusyError(DatabaseError):
    """Someone is connected to a database that must be idle (a template for a clone)."""

    key = "Database"


class DumpSpaceError(DatabaseError):
    """The dump's folder has less free space than the database's size."""


class ClientToolMissingError(DatabaseError):
    """A client program (pg_dump, psql, mariadb-dump, ...) is not installed."""


class OwnerMismatchError(DatabaseError):
    """A database made by the tool ended up owned by another role."""


class UnsupportedError(DatabaseError):
    """The engine has no such operation."""


def run_tool(runner: Runner, conn: Connection, argv: list[str], classify, *, timeout: float,
             env: dict[str, str] | None = None, input: str | None = None) -> Completed:
    """Run one client program; translate its failure into the DatabaseError `classify` picks.

    `classify(stderr)` returns (error class, message, hint) or None for an
    unrecognised failure (then a plain DatabaseError with the stderr tail).
    """
    try:
        return runner.run(argv, timeout=timeout, env=env, input=input)
    except CommandError as exc:
        if exc.completed is None and isinstance(exc.__cause__, FileNotFoundError):
            raise ClientToolMissingError(conn, f"{argv[0]} is not installed",
                                         "install the database's client tools (Debian: "
                                         "postgresql-client or mariadb-client)") from None
        done = exc.completed
        if done is None or done.returncode < 0:
            raise DatabaseError(conn, f"{argv[0]} failed: {exc.message}", exc.hint,
                                completed=done) from None
        found = classify(done.stderr)
        if found is None:
            raise DatabaseError(conn, f"{argv[0]} exited with {done.returncode}: {done.tail(2)}",
                                completed=done) from None
        cls, message, hint = found
        raise cls(conn, message, hint, completed=done) from None
