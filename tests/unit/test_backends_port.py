"""The database port over a scripted runner: errors by class, dry run, credentials off argv.

The stderr texts below were captured from psql 15.18, pg_dump 15.18, mariadb and
mariadb-dump 10.11.19 (Debian 12) against the test servers of
tests/harness/databases.py.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from orchestrator.errors import CommandError, Completed
from orchestrator.host import mysql, postgresql
from orchestrator.host.changes import Changes
from orchestrator.host.credential_files import SECRET_PREFIX, secret_folder, write_secret
from orchestrator.host.host import make_databases
from orchestrator.host.databases import (
    ClientToolMissingError, Connection, CreateDatabaseDeniedError, DatabaseAuthError,
    DatabaseBusyError, DatabaseError, DatabaseExistsError, DatabaseMissingError, Databases,
    DatabaseUnreachableError, DumpSpaceError, Engine, OwnerMismatchError, UnsupportedError)
from orchestrator.host.postgresql import PostgreSQLClient
from orchestrator.host.runner import RealRunner

SECRET = "pa:ss\\word\"x"
PG = Connection(Engine.POSTGRESQL, "127.0.0.1", 5433, "orthanc", "orthanc", password=SECRET,
                origin="/etc/orthanc/postgresql.json: PostgreSQL")
MY = Connection(Engine.MYSQL, "localhost", 3306, "orthanc", "orthanc", password=SECRET,
                socket="/run/mysqld/mysqld.sock", origin="/etc/orthanc/mysql.json: MySQL")

PG_STDERR = {
    'psql: error: connection to server at "127.0.0.1", port 52603 failed: FATAL:  password '
    'authentication failed for user "orthanc"\npassword retrieved from file "/tmp/x/pgpass"\n':
        DatabaseAuthError,
    'psql: error: connection to server at "127.0.0.1", port 33443 failed: Connection refused\n'
    '\tIs the server running on that host and accepting TCP/IP connections?\n':
        DatabaseUnreachableError,
    'ERROR:  permission denied to create database\n': CreateDatabaseDeniedError,
    'ERROR:  permission denied to copy database "orthanc"\n': CreateDatabaseDeniedError,
    'ERROR:  database "orthanc" already exists\n': DatabaseExistsError,
    'psql: error: connection to server at "127.0.0.1", port 52603 failed: FATAL:  database '
    '"nosuch" does not exist\n': DatabaseMissingError,
    'ERROR:  source database "orthanc" is being accessed by other users\nDETAIL:  There is 1 '
    'other session using the database.\n': DatabaseBusyError,
}
MY_STDERR = {
    "ERROR 1045 (28000): Access denied for user 'orthanc'@'127.0.0.1' (using password: YES)\n":
        DatabaseAuthError,
    "ERROR 2002 (HY000): Can't connect to server on '127.0.0.1' (115)\n":
        DatabaseUnreachableError,
    'mariadb-dump: Got error: 2002: "Can\'t connect to server on \'127.0.0.1\' (115)" when '
    'trying to connect\n': DatabaseUnreachableError,
    "ERROR 2002 (HY000): Can't connect to local server through socket '/nonexistent.sock' (2)\n":
        DatabaseUnreachableError,
    "--------------\ncreate database other\n--------------\n\nERROR 1044 (42000) at line 1: "
    "Access denied for user 'limited'@'127.0.0.1' to database 'other'\n":
        CreateDatabaseDeniedError,
    "ERROR 1007 (HY000) at line 1: Can't create database 'orthanc'; database exists\n":
        DatabaseExistsError,
    "ERROR 1049 (42000): Unknown database 'nosuch'\n": DatabaseMissingError,
    'mariadb-dump: Got error: 1045: "Access denied for user \'orthanc\'@\'127.0.0.1\' (using '
    'password: YES)" when trying to connect\n': DatabaseAuthError,
}


@pytest.mark.parametrize("stderr,cls", PG_STDERR.items())
def test_postgresql_errors_by_class(stderr, cls):
    found = postgresql.classify(stderr)
    assert found is not None and found[0] is cls and found[2]


@pytest.mark.parametrize("stderr,cls", MY_STDERR.items())
def test_mysql_errors_by_class(stderr, cls):
    found = mysql.classify(stderr)
    assert found is not None and found[0] is cls and found[2]


class ScriptedRunner:
    """Answers each call with `answer(argv, sql)`; checks credentials on the way."""

    def __init__(self, answer: Callable[[tuple[str, ...], str], Completed]):
        self.answer = answer
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.secret_files: list[Path] = []

    def run(self, argv: Sequence[str], *, timeout: float, check: bool = True,
            env: Mapping[str, str] | None = None, cwd: str | None = None,
            input: str | None = None) -> Completed:
        argv = tuple(argv)
        assert not any(SECRET in a for a in argv), argv
        assert not any(SECRET in v for v in (env or {}).values())
        for path in [Path((env or {}).get("PGPASSFILE", ""))] + [
                Path(a.split("=", 1)[1]) for a in argv if a.startswith("--defaults-extra-file=")]:
            if path.name:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600
                assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
                self.secret_files.append(path)
        self.calls.append((argv, input or ""))
        done = self.answer(argv, input or "")
        if check and done.returncode:
            raise CommandError("failed", completed=done)
        return done


def _pg_answers(*, size: int = 1000, sessions: str = "", owner: str = "orthanc",
                exists: bool = False, fail: str | None = None):
    def answer(argv, sql):
        ok = Completed(argv, 0, "", "")
        if fail and (fail in sql or fail in argv[0]):
            return Completed(argv, 1, "", "ERROR:  permission denied to create database\n")
        if "pg_database_size" in sql:
            return Completed(argv, 0, f"{size}\n")
        if "pg_stat_activity" in sql:
            return Completed(argv, 0, sessions)
        if "pg_get_userbyid" in sql:
            return Completed(argv, 0, f"{owner}\n")
        if "SELECT 1 FROM pg_database" in sql:
            return Completed(argv, 0, "1\n" if exists else "")
        if argv[0].endswith("pg_dump"):
            Path(argv[argv.index("-f") + 1]).write_bytes(b"PGDMP fake")
        return ok
    return answer


def test_dry_run_records_and_runs_no_change(tmp_path):
    runner = ScriptedRunner(_pg_answers())
    db = make_databases(Changes(dry=True), runner)
    dump = db.dump(PG, tmp_path / "d" / "orthanc.dump")
    db.clone(PG, "orthanc_next")
    db.restore(PG, tmp_path / "d" / "orthanc.dump", "orthanc_back")
    db.rename(PG, "orthanc_next", "orthanc_failed")
    assert dump.sha256 is None and not (tmp_path / "d").exists()
    assert db.exists(PG, "orthanc_failed") and not db.exists(PG, "orthanc_next")
    assert [c.text.split(" (")[0] for c in db.changes.items] == [
        f"dump database orthanc to {tmp_path}/d/orthanc.dump with pg_dump -Fc",
        "clone database orthanc into orthanc_next owned by orthanc",
        f"restore {tmp_path}/d/orthanc.dump into a new database orthanc_back",
        "rename database orthanc_next to orthanc_failed"]
    for argv, sql in runner.calls:
        assert argv[0] == "psql", argv
        assert sql.lstrip().startswith("SELECT"), sql


def test_dump_records_sha256_and_keeps_credentials_in_a_private_file(tmp_path):
    runner = ScriptedRunner(_pg_answers())
    dump = make_databases(Changes(), runner).dump(PG, tmp_path / "orthanc.dump")
    import hashlib
    assert dump.sha256 == hashlib.sha256(b"PGDMP fake").hexdigest()
    assert dump.path.read_bytes() == b"PGDMP fake" and dump.size == 10
    assert runner.secret_files and not any(p.exists() or p.parent.exists()
                                           for p in runner.secret_files)
    assert not list(tmp_path.glob("*.orchestrator-tmp"))


def test_pgpass_escapes_colon_and_backslash(tmp_path):
    seen = []

    def answer(argv, sql):
        return Completed(argv, 0, "15.18\t1\n")

    class Peek(ScriptedRunner):
        def run(self, argv, **kw):
            seen.append(Path(kw["env"]["PGPASSFILE"]).read_text())
            return super().run(argv, **kw)

    PostgreSQLClient(Peek(answer)).server(PG)
    assert seen[-1] == "*:*:*:orthanc:pa\\:ss\\\\word\"x\n"


def test_mysql_option_file_quotes_the_password():
    text = mysql.option_file(MY)
    assert 'password="pa:ss\\\\word\\"x"' in text and "socket=" in text


def test_dump_refused_when_the_disk_is_smaller_than_the_database(tmp_path):
    runner = ScriptedRunner(_pg_answers(size=2 ** 62))
    with pytest.raises(DumpSpaceError) as info:
        make_databases(Changes(), runner).dump(PG, tmp_path / "orthanc.dump")
    assert info.value.message.startswith("/etc/orthanc/postgresql.json: PostgreSQL: ")
    assert not any(a[0] == "pg_dump" for a, _ in runner.calls)


def test_clone_refused_while_someone_is_connected():
    runner = ScriptedRunner(_pg_answers(sessions="4242\torthanc\t\t127.0.0.1\n"))
    with pytest.raises(DatabaseBusyError) as info:
        make_databases(Changes(), runner).clone(PG, "orthanc_next")
    assert "1 session(s) of orthanc" in info.value.message and info.value.hint
    assert not any("CREATE DATABASE" in sql for _, sql in runner.calls)


def test_clone_target_that_exists_is_refused_before_any_change():
    runner = ScriptedRunner(_pg_answers(exists=True))
    with pytest.raises(DatabaseExistsError):
        make_databases(Changes(), runner).clone(PG, "orthanc_next")
    assert not any("CREATE" in sql for _, sql in runner.calls)


def test_clone_owner_is_checked():
    runner = ScriptedRunner(_pg_answers(owner="postgres"))
    with pytest.raises(OwnerMismatchError):
        make_databases(Changes(), runner).clone(PG, "orthanc_next")
    sql = [s for _, s in runner.calls if "CREATE DATABASE" in s]
    assert sql == ['CREATE DATABASE :"name" TEMPLATE :"old" OWNER :"owner";']


def test_role_without_createdb():
    runner = ScriptedRunner(_pg_answers(fail="CREATE DATABASE"))
    with pytest.raises(CreateDatabaseDeniedError) as info:
        make_databases(Changes(), runner).clone(PG, "orthanc_next")
    assert "CREATEDB" in info.value.hint and info.value.completed.returncode == 1


def test_bad_target_names_are_input_errors():
    db = make_databases(Changes(dry=True), ScriptedRunner(_pg_answers()))
    for name in ("", "a b", "x;drop", "é", "a" * 64):
        with pytest.raises(Exception) as info:
            db.clone(PG, name)
        assert info.value.exit_code == 2


def test_pg_dump_missing_is_its_own_error(tmp_path):
    client = PostgreSQLClient(RealRunner(), bindir=str(tmp_path / "no-such-bin"))
    with pytest.raises(ClientToolMissingError) as info:
        client.dump(PG, tmp_path / "x.dump", timeout=5)
    assert "pg_dump is not installed" in info.value.message
    assert "postgresql-client" in info.value.hint


def test_mysql_has_no_rename():
    with pytest.raises(UnsupportedError):
        mysql.MySQLClient(ScriptedRunner(_pg_answers())).rename(MY, "a", "b")


def test_mysql_dump_keeps_routines_and_triggers(tmp_path):
    runner = ScriptedRunner(lambda argv, sql: (
        Completed(argv, 0, "1\n") if "SCHEMATA" in sql else Completed(argv, 0, "4096\n")))
    client = mysql.MySQLClient(runner)
    client.dump(MY, tmp_path / "x.sql", timeout=5)
    argv = runner.calls[-1][0]
    assert {"--single-transaction", "--routines", "--triggers"} <= set(argv)
    assert argv[1].startswith("--defaults-extra-file=") and argv[-1] == "orthanc"


def test_restore_checks_the_dump_before_creating_anything(tmp_path):
    runner = ScriptedRunner(_pg_answers())
    db = make_databases(Changes(), runner)
    dump = db.dump(PG, tmp_path / "orthanc.dump")
    dump.path.write_bytes(b"PGDMP tampered")
    with pytest.raises(DatabaseError, match="changed since it was taken"):
        db.restore(PG, dump.path, "orthanc_back", sha256=dump.sha256)
    with pytest.raises(DatabaseError, match="no dump at"):
        db.restore(PG, tmp_path / "missing.dump", "orthanc_back")
    assert not any("CREATE" in sql for _, sql in runner.calls)


def test_a_dry_run_sees_the_databases_its_earlier_changes_would_make(tmp_path):
    """clone then dump the clone: the dry run reads no size of a database that does not exist."""
    runner = ScriptedRunner(_pg_answers())
    db = make_databases(Changes(dry=True), runner)
    db.clone(PG, "orthanc_next")
    dump = db.dump(PG.on("orthanc_next"), tmp_path / "next.dump")
    assert dump.size == 0 and len(db.changes) == 2
    assert sum("pg_database_size" in sql for _, sql in runner.calls) == 0


def test_a_killed_run_s_credential_folder_is_swept_by_the_next_one(tmp_path):
    """SIGKILL skips `finally`: the folder of a dead PID goes at the next use; a live one's
    (ours) and folders of other names stay."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    left = tmp_path / f"{SECRET_PREFIX}{dead}-abc"
    left.mkdir(mode=0o700)
    write_secret(left / "pgpass", "*:*:*:orthanc:secret\n")
    other = tmp_path / f"{SECRET_PREFIX}older-style"
    other.mkdir()
    with secret_folder(tmp_path) as mine:
        assert mine.name.startswith(f"{SECRET_PREFIX}{os.getpid()}-")
        assert oct(mine.stat().st_mode & 0o777) == "0o700"
        with secret_folder(tmp_path) as nested:  # our own live folder is not swept
            assert mine.is_dir() and nested.is_dir()
    assert not left.exists() and other.exists() and not mine.exists()
