"""Throwaway PostgreSQL 15 and MariaDB servers owned by the tests.

Each server gets its own data folder under a fresh /tmp/orch-db-* folder (not
pytest's tmp_path: that is 0700 root, and the servers refuse to run as root),
its own loopback port and its own Unix socket folder, and runs as the system
user its package created (`postgres`, `mysql`). `stop()` signals only the
server's own PID, then removes the folder.

Admin statements go through the server's own client as its superuser
(PostgreSQL: `postgres`, trusted on the socket; MariaDB: `root` with no password,
on the socket). Test roles log in with passwords over TCP or the socket.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.orthanc import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
MARIADBD = shutil.which("mariadbd", path="/usr/sbin:/usr/bin") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
PG_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")
PG_STORAGE_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLStorage.so")
MYSQL_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancMySQLIndex.so")
MYSQL_STORAGE_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancMySQLStorage.so")


def postgresql_missing() -> str | None:
    """Why a PostgreSQL test cannot run here, or None."""
    if not (PG_BIN / "postgres").exists():
        return f"no PostgreSQL server in {PG_BIN} (apt-get install postgresql)"
    if not PG_PLUGIN.exists():
        return f"no {PG_PLUGIN} (apt-get install orthanc-postgresql)"
    return _user_missing("postgres")


def mariadb_missing() -> str | None:
    if not Path(MARIADBD).exists():
        return "no mariadbd (apt-get install mariadb-server)"
    if not MYSQL_PLUGIN.exists():
        return f"no {MYSQL_PLUGIN} (apt-get install orthanc-mysql)"
    return _user_missing("mysql")


def _user_missing(name: str) -> str | None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return f"no system user {name}"
    return None if os.geteuid() == 0 else "the database servers are started as root's helpers"


def _own_folder(prefix: str, user: str) -> Path:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    return root


def _stop(proc: subprocess.Popen | None, sig: int, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class PostgresServer:
    """One PostgreSQL cluster: initdb, start on a free port, admin SQL, stop."""

    root: Path = field(default_factory=lambda: _own_folder("orch-db-pg-", "postgres"))
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def start(self, timeout: float = 60.0) -> PostgresServer:
        user = pwd.getpwnam("postgres")
        if not self.data.exists():
            subprocess.run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                            "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"],
                           check=True, capture_output=True, user=user.pw_uid, group=user.pw_gid)
            (self.data / "pg_hba.conf").write_text(
                "local all postgres trust\n"
                "local all all scram-sha-256\n"
                "host all all 127.0.0.1/32 scram-sha-256\n")
        self.socket_dir.mkdir(exist_ok=True)
        os.chown(self.socket_dir, user.pw_uid, user.pw_gid)
        for attempt in range(3):
            self.port = self.port or free_port()
            log = open(self.root / "postgres.log", "ab")
            self.proc = subprocess.Popen(
                [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "max_connections=60",
                 "-c", "log_statement=ddl"],  # so a test can prove a dry run wrote nothing
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                user=user.pw_uid, group=user.pw_gid, start_new_session=True)
            log.close()
            if self._wait(timeout):
                return self
            _stop(self.proc, signal.SIGKILL)
            self.port = 0
        raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            done = subprocess.run([str(PG_BIN / "pg_isready"), "-h", str(self.socket_dir),
                                   "-p", str(self.port), "-U", "postgres"],
                                  capture_output=True)
            if done.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def log_text(self) -> str:
        try:
            return (self.root / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = (self.root / "postgres.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the socket; return psql's unaligned output."""
        done = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.socket_dir), "-p", str(self.port),
                               "-U", "postgres", "-d", database],
                              input=statement, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def add_role(self, name: str, password: str, *, createdb: bool = True,
                 database: str | None = None) -> None:
        """A login role with a password (and a database it owns, if named)."""
        self.sql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"
                 + (" CREATEDB" if createdb else "") + ";")
        if database:
            self.sql(f"CREATE DATABASE \"{database}\" OWNER \"{name}\";")

    def stop(self) -> None:
        """Fast shutdown of our postmaster by PID, then remove the folder."""
        _stop(self.proc, signal.SIGINT)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def section(self, database: str, user: str, password: str, **extra) -> dict:
        """An Orthanc "PostgreSQL" section pointing at this server over TCP."""
        body = {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1",
                "Port": self.port, "Database": database, "Username": user,
                "Password": password, "Lock": True, "MaximumConnectionRetries": 2,
                "ConnectionRetryInterval": 1}
        body.update(extra)
        return body


@dataclass
class MariaDBServer:
    """One MariaDB server: install-db, start on a free port, admin SQL, stop."""

    root: Path = field(default_factory=lambda: _own_folder("orch-db-my-", "mysql"))
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def start(self, timeout: float = 90.0) -> MariaDBServer:
        user = pwd.getpwnam("mysql")
        if not self.data.exists():
            subprocess.run([INSTALL_DB, "--no-defaults", f"--datadir={self.data}",
                            "--user=mysql", "--auth-root-authentication-method=normal",
                            "--skip-test-db", "--skip-name-resolve"],
                           check=True, capture_output=True)
        for attempt in range(3):
            self.port = self.port or free_port()
            log = open(self.root / "mariadb.log", "ab")
            self.proc = subprocess.Popen(
                [MARIADBD, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                 f"--socket={self.socket}", "--bind-address=127.0.0.1",
                 f"--pid-file={self.root / 'mariadbd.pid'}", "--skip-name-resolve",
                 "--innodb-flush-log-at-trx-commit=0", "--innodb-buffer-pool-size=64M",
                 "--skip-log-bin", f"--log-error={self.root / 'mariadb.err'}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                user=user.pw_uid, group=user.pw_gid, start_new_session=True)
            log.close()
            if self._wait(timeout):
                return self
            _stop(self.proc, signal.SIGKILL)
            self.port = 0
        raise RuntimeError(f"MariaDB did not start: {self.log_tail()}")

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            if self.socket.exists():
                try:
                    self.sql("SELECT 1;")
                    return True
                except RuntimeError:
                    pass
            time.sleep(0.1)
        return False

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = (self.root / "mariadb.err").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run SQL as root over the socket; return the batch output."""
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root",
                "--batch", "--skip-column-names"]
        if database:
            argv.append(database)
        done = subprocess.run(argv, input=statement, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def add_user(self, name: str, password: str, *, global_create: bool = True,
                 database: str | None = None) -> None:
        """A user on localhost and 127.0.0.1 (all privileges everywhere, or on `database`)."""
        scope = "*.*" if global_create else f"`{database}`.*"
        for host in ("localhost", "127.0.0.1"):
            self.sql(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}';"
                     f"GRANT ALL PRIVILEGES ON {scope} TO '{name}'@'{host}';")
        if database:
            self.sql(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4 "
                     "COLLATE utf8mb4_unicode_ci;")

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, 60.0)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def section(self, database: str, user: str, password: str, **extra) -> dict:
        """An Orthanc "MySQL" section pointing at this server over TCP."""
        body = {"EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1",
                "Port": self.port, "UnixSocket": "", "Database": database, "Username": user,
                "Password": password, "Lock": True, "MaximumConnectionRetries": 2,
                "ConnectionRetryInterval": 1}
        body.update(extra)
        return body
