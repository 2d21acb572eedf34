"""Facts about Orthanc's SQLite index, read offline and read-only.

While Orthanc runs it holds the index with LOCKING_MODE=EXCLUSIVE, so a
read-only open fails with "database is locked": that is how `locked` is known.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import InputError

INDEX_FILE = "index"
SIDE_FILES = ("index-wal", "index-shm")  # present while running or after a crash
LEVELS = {0: "patients", 1: "studies", 2: "series", 3: "instances"}


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

    def to_dict(self) -> dict:
        return {"path": str(self.path), "exists": self.exists, "locked": self.locked,
                "schema_version": self.schema_version, "counts": dict(self.counts),
                "files": [str(f) for f in self.files], "error": self.error}


def index_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / INDEX_FILE


def index_files(index_dir: str | Path) -> tuple[Path, ...]:
    """Return the index file and the side files that exist next to it."""
    base = index_path(index_dir)
    out = [base] if base.exists() else []
    out += [base.with_name(n) for n in SIDE_FILES if base.with_name(n).exists()]
    return tuple(out)


def _connect_ro(path: Path) -> sqlite3.Connection:
    # mode=ro: never create, never write. The URI needs the path quoted.
    from urllib.parse import quote
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0.2)
    return con


def index_is_locked(path: str | Path) -> bool:
    """True when an Orthanc holds the index (a read-only query fails with 'locked')."""
    p = Path(path)
    if p.is_dir():
        p = index_path(p)
    if not p.exists():
        return False
    try:
        con = _connect_ro(p)
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


def read_index(index_dir: str | Path) -> IndexFacts:
    """Read schema version and counts from `<index_dir>/index`, read-only.

    A missing index is a fact (exists=False), not an error: `--upgrade` on a
    missing index would create a fresh empty database, so callers must refuse.
    """
    path = index_path(index_dir)
    if not path.exists():
        return IndexFacts(path, exists=False)
    files = index_files(index_dir)
    try:
        con = _connect_ro(path)
    except sqlite3.Error as exc:
        return IndexFacts(path, exists=True, files=files, error=str(exc))
    try:
        row = con.execute("SELECT value FROM GlobalProperties WHERE property=1").fetchone()
        version = int(row[0]) if row and str(row[0]).strip().isdigit() else None
        counts = {name: 0 for name in LEVELS.values()}
        for level, count in con.execute(
                "SELECT resourceType, COUNT(*) FROM Resources GROUP BY resourceType"):
            if level in LEVELS:
                counts[LEVELS[level]] = int(count)
        return IndexFacts(path, True, False, version, counts, files)
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return IndexFacts(path, True, True, files=files,
                              error="locked: an Orthanc process is using this index")
        return IndexFacts(path, True, files=files, error=f"not an Orthanc index: {text}")
    except sqlite3.DatabaseError as exc:
        return IndexFacts(path, True, files=files, error=f"not an Orthanc index: {exc}")
    finally:
        con.close()


def require_index(index_dir: str | Path) -> IndexFacts:
    """Return the facts of an index that exists and reads; raise InputError otherwise."""
    facts = read_index(index_dir)
    if not facts.exists:
        raise InputError(f"no Orthanc index at {facts.path}",
                         hint="check IndexDirectory; --upgrade would create an empty database here")
    if facts.error and not facts.locked:
        raise InputError(f"{facts.path}: {facts.error}", hint="is this an Orthanc SQLite index?")
    return facts
