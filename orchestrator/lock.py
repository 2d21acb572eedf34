"""Run locks: one per state folder and service, one per Orthanc.

Two locks guard a run, both taken before anything is read or changed:
- `RunLock`: `<state_dir>/<service>.lock`, one per state folder and service name (it guards
  that service's journal).
- `OrthancLock`: one per Orthanc, in a fixed system folder (`/run/lock/orchestrator/`,
  `%ProgramData%\\orchestrator\\locks` on Windows, `$ORCHESTRATOR_LOCK_DIR` for tests),
  keyed on what makes two plans the same server: the real path of the SQLite index, or the
  database identity (`postgresql://host:port/db`). Two runs under other service names or
  other state folders still meet here.

A lock is an flock (an msvcrt byte lock on Windows) on a file holding the owner's PID, host,
command and start time; the kernel drops it when the owner dies, so a file naming a dead
PID is stale by construction and is taken over with a message.

Lock files are opened through `orchestrator.statefile` (no symlink followed, a private
folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import InputError, JournalOpenError
from orchestrator.statefile import WINDOWS, open_state_file, safe_name

LOCK_DIR_ENV = "ORCHESTRATOR_LOCK_DIR"
POSIX_LOCK_DIR = Path("/run/lock/orchestrator")
OWNER_MAX = 4096
# Ports a database listens on when the config names none: the identity must not depend on
# whether the port was written out.
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "", "unix", "socket"}


# -- the owner record --------------------------------------------------------------------

@dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    started: float
    command: str = ""
    service: str = ""
    state_dir: str = ""
    key: str = ""  # OrthancLock: which server

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        who = f" of {self.service}" if self.service else ""
        where = f", state in {self.state_dir}" if self.state_dir else ""
        return f"pid {self.pid} on {self.host}, {self.command or 'a run'}{who} since {when}{where}"


class _FileLock:
    """An exclusive, non-blocking lock on one file holding its owner's record."""

    what = "lock"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.recovered: LockOwner | None = None  # a stale owner we took over from

    def _refusal(self, who: str) -> JournalOpenError:
        return JournalOpenError(f"another run holds the lock {self.path} ({who})",
                                hint="wait for it to finish; `orchestrator status` shows it")

    def _owner(self, command: str, service: str, state_dir: str) -> LockOwner:
        return LockOwner(os.getpid(), socket.gethostname(), time.time(), command, service,
                         state_dir)

    def acquire(self, command: str, *, service: str = "", state_dir: str | Path = "") -> _FileLock:
        """Take the lock or raise JournalOpenError (exit 5) naming the live owner."""
        try:
            fd = open_state_file(self.path, os.O_RDWR | os.O_CREAT, what=self.what)
        except OSError as exc:
            raise InputError(f"cannot create the {self.what} {self.path}: {exc.strerror or exc}",
                             hint="run as root, or give a writable folder") from exc
        if not _try_lock(fd):
            owner = _read_owner(fd)
            os.close(fd)
            raise self._refusal(owner.describe() if owner else "another process")
        previous = _read_owner(fd)
        if previous is not None and previous.pid != os.getpid():
            # The kernel dropped the lock when that process died: its record is stale.
            self.recovered = previous
        owner = self._owner(command, service, str(state_dir))
        data = json.dumps(asdict(owner)).encode() + b"\n"
        # The record lives past byte 0 on Windows, where the locked byte cannot be written.
        os.ftruncate(fd, _RECORD_AT)
        os.lseek(fd, _RECORD_AT, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and clear the owner record."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, _RECORD_AT)
            _unlock(self.fd)
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> _FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def stale_message(self) -> str | None:
        """The message for a recovered stale lock (None when there was none)."""
        if self.recovered is None:
            return None
        return f"recovered a stale lock left by {self.recovered.describe()} (no longer running)"


class RunLock(_FileLock):
    """The lock of one service's journal: `<state_dir>/<service>.lock`."""

    what = "run lock"

    @classmethod
    def for_service(cls, state_dir: Path, service: str) -> RunLock:
        return cls(Path(state_dir) / f"{safe_name(service)}.lock")


class OrthancLock(_FileLock):
    """The lock of one Orthanc server, whatever the service name or state folder."""

    what = "Orthanc lock"

    def __init__(self, key: str, directory: Path | None = None):
        self.key = key
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        slug = safe_name(key.rsplit("/", 2)[-2] if "/" in key else key)[:40]
        super().__init__(Path(directory or lock_dir()) / f"{slug}-{digest}.lock")

    @classmethod
    def for_sqlite(cls, index_dir: Path, directory: Path | None = None) -> OrthancLock:
        return cls(sqlite_key(index_dir), directory)

    @classmethod
    def for_config(cls, config: Path, directory: Path | None = None) -> OrthancLock:
        return cls(config_key(config), directory)

    @classmethod
    def for_database(cls, kind: str, host: str, port: int | None, database: str,
                     directory: Path | None = None) -> OrthancLock:
        return cls(database_key(kind, host, port, database), directory)

    def _owner(self, command: str, service: str, state_dir: str) -> LockOwner:
        return LockOwner(os.getpid(), socket.gethostname(), time.time(), command, service,
                         state_dir, self.key)

    def _refusal(self, who: str) -> JournalOpenError:
        return JournalOpenError(f"another run is working on the same Orthanc ({self.key}): {who}",
                                hint="wait for it to finish; `orchestrator status` with that "
                                     "run's plan shows it")


def sqlite_key(index_dir: Path) -> str:
    """The identity of a SQLite-backed Orthanc: the real path of its index file."""
    return "sqlite:" + os.path.realpath(Path(index_dir) / "index")


def database_key(kind: str, host: str, port: int | None, database: str) -> str:
    """The identity of a PostgreSQL/MySQL-backed Orthanc: `kind://host:port/database`, with
    loopback names and default ports written one way."""
    kind = kind.lower()
    host = (host or "").strip().lower().strip("[]")
    host = "localhost" if host in LOCAL_HOSTS or host.startswith("/") else host
    port = int(port) if port else DEFAULT_PORTS.get(kind, 0)
    return f"{kind}://{host}:{port}/{database}"


def config_key(config: Path) -> str:
    """The identity of an Orthanc by its configuration (file or folder), real path: stable
    while a run relocates the index and rewrites the config in place."""
    return "config:" + os.path.realpath(config)


def index_key(backend: str, index_dir: Path, section: Mapping | None = None) -> str:
    """The identity of an Orthanc's index: `sqlite_key`, or `database_key` from the backend's
    configuration section (`Host`/`Port`/`Database`, or a `ConnectionUri`)."""
    if backend == "sqlite":
        return sqlite_key(index_dir)
    sec = section or {}
    uri = sec.get("ConnectionUri") if isinstance(sec.get("ConnectionUri"), str) else None
    if uri:
        parts = urlsplit(uri)  # only host, port and path are kept: never the password
        try:
            port = parts.port
        except ValueError:
            port = None
        return database_key(backend, parts.hostname or "", port, parts.path.lstrip("/"))
    port = sec.get("Port")
    return database_key(backend, str(sec.get("Host", "localhost")),
                        int(port) if str(port or "").isdigit() else None,
                        str(sec.get("Database", "orthanc")))


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The system folder of the per-Orthanc locks."""
    env = os.environ if environ is None else environ
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    if WINDOWS:
        return Path(env.get("ProgramData", r"C:\ProgramData")) / "orchestrator" / "locks"
    return POSIX_LOCK_DIR


def read_lock_owner(path: Path) -> LockOwner | None:
    """Who holds the lock right now (None when nobody does), without taking it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        if not _try_lock(fd, shared=True):
            return _read_owner(fd)
        _unlock(fd)
        return None
    finally:
        os.close(fd)


# -- the platform's lock call -------------------------------------------------------------

# Windows locks byte ranges and refuses reads of a locked byte to others, so the owner
# record starts after the one byte we lock.
_RECORD_AT = 1 if WINDOWS else 0


def _read_owner(fd: int) -> LockOwner | None:
    try:
        os.lseek(fd, _RECORD_AT, os.SEEK_SET)
        info = json.loads(os.read(fd, OWNER_MAX) or b"null")
        if not isinstance(info, dict):
            return None
        return LockOwner(int(info["pid"]), str(info.get("host", "?")),
                         float(info.get("started", 0)), str(info.get("command", "")),
                         str(info.get("service", "")), str(info.get("state_dir", "")),
                         str(info.get("key", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _try_lock(fd: int, shared: bool = False) -> bool:
    """Take a non-blocking lock on the file (flock; an msvcrt byte lock on Windows)."""
    if WINDOWS or _no_fcntl():
        import msvcrt

        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(fd: int) -> None:
    if WINDOWS or _no_fcntl():
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _no_fcntl() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return True
    return False
