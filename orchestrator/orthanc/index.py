"""Facts about Orthanc's SQLite index, read offline without changing a byte of its folder.

Three things make this harder than `sqlite3.connect(...?mode=ro)`:
- Orthanc keeps the index in WAL mode. A plain read-only open of a stopped index
  creates `index-wal` and `index-shm` next to it and leaves them behind: a write
  into the service's data folder by a tool that claims to only read, and files
  that look like the leftovers of a crash. A cleanly closed index is therefore
  read with `immutable=1`, which creates nothing.
- While Orthanc runs it holds POSIX locks on the file (LOCKING_MODE=EXCLUSIVE).
  F_GETLK asks the kernel who holds them without taking any lock: that proves
  the service runs (and names its PID) with no side effect.
- After a crash the data sits in a non-empty `index-wal` that only a writer can
  replay: a small index is read from a private copy, a large one is reported.

Resources.resourceType is 1 patient, 2 study, 3 series, 4 instance.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from orchestrator.errors import InputError

INDEX_FILE = "index"
SIDE_FILES = ("index-wal", "index-shm")  # present while running or after a crash
LEVELS = {1: "patients", 2: "studies", 3: "series", 4: "instances"}
COPY_LIMIT = 256 * 1024 * 1024  # replay a crashed index's WAL in a private copy up to this size
# SQLite's lock bytes (os_unix.c): PENDING_BYTE, RESERVED_BYTE, then the 510 SHARED bytes.
_LOCK_START, _LOCK_LEN = 0x40000000, 512


@dataclass(frozen=True)
class IndexFacts:
    """What the index at `path` says (None where it could not be read)."""

    path: Path
    exists: bool
    locked: bool = False
    schema_version: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # index plus whichever side files exist
    error: str | None = None
    locked_by: int | None = None  # PID holding the lock, when the kernel tells
    wal_pending: bool = False  # a non-empty index-wal without a running Orthanc: not closed cleanly
    tables: tuple[str, ...] = ()
    accessible: bool = True  # False: permission denied, `exists` unknown

    @property
    def readable(self) -> bool:
        return self.exists and self.error is None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "exists": self.exists, "accessible": self.accessible,
                "locked": self.locked, "locked_by": self.locked_by,
                "schema_version": self.schema_version, "counts": dict(self.counts),
                "wal_pending": self.wal_pending, "files": [str(f) for f in self.files],
                "tables": list(self.tables), "error": self.error}


def index_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / INDEX_FILE


def index_files(index_dir: str | Path) -> tuple[Path, ...]:
    """Return the index file and the side files that exist next to it."""
    base = index_path(index_dir)
    return tuple(p for p in (base, *(base.with_name(n) for n in SIDE_FILES)) if _exists(p))


def _exists(p: Path) -> bool:
    try:
        return p.exists()
    except (OSError, ValueError):
        return False


def lock_holder(path: str | Path) -> int | None:
    """Return the PID holding a SQLite lock on `path` (0 if unknown), or None if unlocked.

    Uses F_GETLK, which only asks; on systems without fcntl it falls back to a
    read-only SQLite probe (which cannot name the holder).
    """
    p = Path(path)
    try:
        import fcntl
    except ImportError:  # Windows
        return 0 if _sqlite_probe_locked(p) else None
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack("hhqqii", fcntl.F_WRLCK, os.SEEK_SET, _LOCK_START, _LOCK_LEN, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid, _ = struct.unpack("hhqqii", answer)
        return None if kind == fcntl.F_UNLCK else pid
    except OSError:
        return 0 if _sqlite_probe_locked(p) else None
    finally:
        os.close(fd)


def _sqlite_probe_locked(p: Path) -> bool:
    try:
        con = sqlite3.connect(f"file:{quote(str(p))}?mode=ro", uri=True, timeout=0.2)
    except sqlite3.Error:
        return False
    try:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return False
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc) or "busy" in str(exc)
    except sqlite3.Error:
        return False
    finally:
        con.close()


def index_is_locked(path: str | Path) -> bool:
    """True when an Orthanc holds the index (`path`: the index file or its folder)."""
    p = Path(path)
    if p.is_dir():
        p = index_path(p)
    return _exists(p) and lock_holder(p) is not None


def read_index(index_dir: str | Path) -> IndexFacts:
    """Read schema version, counts and tables from `<index_dir>/index` without writing anything.

    A missing index is a fact (exists=False), not an error: `--upgrade` on a
    missing index would create a fresh empty database, so callers must refuse.
    """
    path = index_path(index_dir)
    try:
        present = path.exists()
    except PermissionError:
        return IndexFacts(path, exists=False, accessible=False,
                          error=f"permission denied on {Path(index_dir)}: run as root or as "
                                "the user Orthanc runs as")
    except (OSError, ValueError) as exc:
        return IndexFacts(path, exists=False, accessible=False, error=f"cannot check: {exc}")
    if not present:
        return IndexFacts(path, exists=False)
    files = index_files(index_dir)
    if not os.access(path, os.R_OK):
        return IndexFacts(path, True, files=files, accessible=False,
                          error="permission denied: run as root or as the user Orthanc runs as")
    holder = lock_holder(path)
    if holder is not None:
        return IndexFacts(path, True, True, files=files, locked_by=holder or None,
                          error="locked: an Orthanc process is using this index")
    wal = path.with_name("index-wal")
    wal_size = wal.stat().st_size if _exists(wal) else 0
    if wal_size == 0:
        return _read(path, f"file:{quote(str(path))}?mode=ro&immutable=1", files, False)
    total = wal_size + path.stat().st_size
    if total > COPY_LIMIT:
        return IndexFacts(path, True, files=files, wal_pending=True,
                          error=f"index-wal holds {wal_size} bytes not yet replayed (Orthanc did "
                                "not close the index cleanly); too large to replay in a copy")
    with tempfile.TemporaryDirectory(prefix="orchestrator-index-") as tmp:
        for f in (path, wal):
            shutil.copyfile(f, Path(tmp) / f.name)
        facts = _read(Path(tmp) / INDEX_FILE, str(Path(tmp) / INDEX_FILE), files, True)
    return IndexFacts(path, facts.exists, facts.locked, facts.schema_version, facts.counts,
                      files, facts.error, wal_pending=True, tables=facts.tables)


def _read(path: Path, target: str, files: tuple[Path, ...], wal_pending: bool) -> IndexFacts:
    try:
        con = sqlite3.connect(target, uri=target.startswith("file:"), timeout=0.2)
    except sqlite3.Error as exc:
        return IndexFacts(path, True, files=files, error=str(exc), wal_pending=wal_pending)
    try:
        tables = tuple(r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"))
        row = con.execute("SELECT value FROM GlobalProperties WHERE property=1").fetchone()
        version = int(row[0]) if row and str(row[0]).strip().isdigit() else None
        counts = {name: 0 for name in LEVELS.values()}
        for level, count in con.execute(
                "SELECT resourceType, COUNT(*) FROM Resources GROUP BY resourceType"):
            if level in LEVELS:
                counts[LEVELS[level]] = int(count)
        return IndexFacts(path, True, False, version, counts, files, wal_pending=wal_pending,
                          tables=tables)
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return IndexFacts(path, True, True, files=files,
                              error="locked: an Orthanc process is using this index")
        return IndexFacts(path, True, files=files, error=f"not an Orthanc index: {text}",
                          wal_pending=wal_pending)
    except sqlite3.DatabaseError as exc:
        return IndexFacts(path, True, files=files, error=f"not an Orthanc index: {exc}",
                          wal_pending=wal_pending)
    finally:
        con.close()


def require_index(index_dir: str | Path) -> IndexFacts:
    """Return the facts of an index that exists and reads; raise InputError otherwise."""
    facts = read_index(index_dir)
    if not facts.accessible:
        raise InputError(f"cannot read {facts.path}: {facts.error}",
                         hint="run as root or as the user Orthanc runs as")
    if not facts.exists:
        raise InputError(f"no Orthanc index at {facts.path}",
                         hint="check IndexDirectory; --upgrade would create an empty database here")
    if facts.error and not facts.locked:
        raise InputError(f"{facts.path}: {facts.error}", hint="is this an Orthanc SQLite index?")
    return facts


def attachment_paths(index_dir: str | Path) -> set[str] | None:
    """The storage paths ('xx/yy/uuid', relative to StorageDirectory) of every attachment the
    stopped index at `index_dir` lists, from one query; None when that cannot be read
    without writing (missing, locked, a WAL to replay, not an Orthanc index).

    Orthanc's file storage keeps attachment `uuid` at `uuid[0:2]/uuid[2:4]/uuid`.
    """
    path = index_path(index_dir)
    wal = path.with_name("index-wal")
    try:
        if not path.is_file() or (wal.exists() and wal.stat().st_size > 0):
            return None
    except OSError:
        return None
    if lock_holder(path) is not None:
        return None
    try:
        con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro&immutable=1", uri=True, timeout=0.2)
    except sqlite3.Error:
        return None
    sep = os.sep
    try:
        return {f"{u[:2]}{sep}{u[2:4]}{sep}{u}" for (u,) in con.execute("SELECT uuid FROM AttachedFiles")
                if isinstance(u, str) and len(u) > 4}
    except sqlite3.Error:
        return None
    finally:
        con.close()
