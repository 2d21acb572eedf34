"""Run locks, and the safe opening of the tool's own state files.

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

State files (locks, the journal) are opened without following symlinks, and only in a
folder owned by us (or root) that no one else may write: a symlink planted where a state
file belongs is refused, naming it, instead of being written through.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import InputError, JournalOpenError

# Windows: chosen by sys.platform as well as os.name, so a Windows-shaped Python on Linux
# (tests/faults/windows_shape) takes the same paths as the real one.
WINDOWS = sys.platform == "win32" or os.name == "nt"
OWNERS = hasattr(os, "geteuid")  # uid owners exist (POSIX)
LOCK_DIR_ENV = "ORCHESTRATOR_LOCK_DIR"
POSIX_LOCK_DIR = Path("/run/lock/orchestrator")
OWNER_MAX = 4096
# Ports a database listens on when the config names none: the identity must not depend on
# whether the port was written out.
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "", "unix", "socket"}


class UnsafeStatePathError(InputError):
    """A state file or folder is a symlink, or sits where others could swap it."""


# -- opening state files safely -------------------------------------------------------

def make_state_dir(path: Path) -> Path:
    """Create a state folder (and its missing parents) private to us (0700); check it."""
    p = Path(path)
    missing = []
    q = p
    while not os.path.lexists(q) and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise InputError(f"cannot create the state folder {d}: {exc.strerror or exc}",
                             hint="run as root, or give a writable --state-dir") from exc
    check_state_dir(p)
    return p


def check_state_dir(path: Path) -> None:
    """Refuse a state folder that is a symlink, or that others own or may write."""
    p = Path(path)
    try:
        st = os.lstat(p)
    except OSError as exc:
        raise InputError(f"cannot read the state folder {p}: {exc.strerror or exc}",
                         hint="give an existing, writable --state-dir") from exc
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeStatePathError(f"the state folder {p} is a symlink (to {os.readlink(p)})",
                                   hint=f"give the real folder as --state-dir, or remove the "
                                        f"symlink {p}")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStatePathError(f"the state folder {p} is not a folder",
                                   hint="give a folder as --state-dir")
    if WINDOWS or not OWNERS:
        return  # owner and mode bits carry no meaning there (ACLs do)
    if st.st_uid not in (0, os.geteuid()):
        raise UnsafeStatePathError(f"the state folder {p} belongs to uid {st.st_uid}, not to us",
                                   hint=f"chown {os.geteuid()} {p}, or give another --state-dir")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeStatePathError(f"the state folder {p} is writable by others "
                                   f"(mode {stat.S_IMODE(st.st_mode):o})",
                                   hint=f"chmod 700 {p}")


def open_state_file(path: Path, flags: int, *, what: str = "state file") -> int:
    """Open (creating, mode 0600) one of our state files without following a symlink.

    The folder is created private (0700) when missing and checked; the file must be a
    regular file of ours with a single link. Raise UnsafeStatePathError naming the path.
    """
    p = Path(path)
    make_state_dir(p.parent)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow and os.path.islink(p):  # no O_NOFOLLOW (Windows): look first
        raise _symlink_error(p, what)
    try:
        fd = os.open(p, flags | nofollow | getattr(os, "O_BINARY", 0), 0o600)
    except OSError:
        if os.path.islink(p):  # ELOOP from O_NOFOLLOW
            raise _symlink_error(p, what) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeStatePathError(f"the {what} {p} is not a regular file",
                                       hint=f"move {p} aside")
        if st.st_nlink > 1:  # a hard link to a file elsewhere: writing would change it
            raise UnsafeStatePathError(f"the {what} {p} has other hard links ({st.st_nlink})",
                                       hint=f"move {p} aside")
        if not WINDOWS and OWNERS and st.st_uid not in (0, os.geteuid()):
            raise UnsafeStatePathError(f"the {what} {p} belongs to uid {st.st_uid}, not to us",
                                       hint=f"move {p} aside")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _symlink_error(p: Path, what: str) -> UnsafeStatePathError:
    try:
        target = os.readlink(p)
    except OSError:
        target = "?"
    return UnsafeStatePathError(f"the {what} {p} is a symlink (to {target}); refusing to "
                                "follow it", hint=f"remove the symlink {p}; the tool creates "
                                                  "the file itself")


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
        return cls(Path(state_dir) / f"{safe_lock_name(service)}.lock")


class OrthancLock(_FileLock):
    """The lock of one Orthanc server, whatever the service name or state folder."""

    what = "Orthanc lock"

    def __init__(self, key: str, directory: Path | None = None):
        self.key = key
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        slug = safe_lock_name(key.rsplit("/", 2)[-2] if "/" in key else key)[:40]
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


def safe_lock_name(name: str) -> str:
    """A name made safe as a file name (no separators, no leading dot or dash)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.@-]", "_", name).lstrip(".-")
    return cleaned or "service"


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


def held_locks(paths: Sequence[Path]) -> list[LockOwner]:
    """The live owners among lock files (for `status`)."""
    return [o for o in (read_lock_owner(p) for p in paths) if o is not None]


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
