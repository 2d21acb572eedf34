"""The SQLite index's schema as a fingerprint, and what a new binary changed in it.

Newer Orthancs rewrite a schema-6 index at their first plain start and still
report DatabaseVersion 6 (1.12.7 adds `Labels`; 1.13.0 adds columns to
`AttachedFiles` and `Metadata`, a `DeletedFiles` table, replaces a trigger,
drops two indexes and adds GlobalProperties row 7; after that 1.10.1 fails
every store). Comparing DatabaseVersion says nothing: the fingerprint is every
`sqlite_master` row (type, name, SQL) plus the GlobalProperties ids, as a flat
`{"table Resources": "CREATE TABLE ...", "property 7": ""}` mapping that a
journal keeps as it is.

`read_fingerprint` reads a stopped index without writing next to it
(`immutable=1`); when a WAL is left (a crash) the index and its WAL are read
from a private copy so that the WAL's pages count. `differences` and
`describe` are pure: two fingerprints in, sentences out.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import OrchestratorError

Fingerprint = dict[str, str]
KINDS = ("table", "index", "trigger", "view")


class FingerprintError(OrchestratorError):
    """The index could not be read for its schema."""


def read_fingerprint(index_dir: Path) -> Fingerprint:
    """The schema fingerprint of `index_dir/index` (read only; the service must be stopped)."""
    index = Path(index_dir) / "index"
    if not index.is_file():
        raise FingerprintError(f"no SQLite index at {index}", hint="check IndexDirectory")
    wal = index.with_name("index-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        with tempfile.TemporaryDirectory(prefix="orchestrator-schema-") as tmp:
            shutil.copyfile(index, Path(tmp) / "index")
            shutil.copyfile(wal, Path(tmp) / "index-wal")
            return _read(f"file:{Path(tmp) / 'index'}?mode=ro")
    return _read(f"file:{index}?immutable=1")


def _read(uri: str) -> Fingerprint:
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise FingerprintError(f"cannot open {uri}: {exc}", hint="is the service stopped?") from exc
    try:
        rows = con.execute("SELECT type, name, sql FROM sqlite_master "
                           "WHERE name NOT LIKE 'sqlite_%'").fetchall()
        out = {f"{kind} {name}": " ".join((sql or "").split()) for kind, name, sql in rows}
        if "table GlobalProperties" in out:
            for (prop,) in con.execute("SELECT property FROM GlobalProperties"):
                out[f"property {prop}"] = ""
        return out
    except sqlite3.Error as exc:
        raise FingerprintError(f"cannot read the schema ({uri}): {exc}",
                               hint="is the service stopped? is this an Orthanc index?") from exc
    finally:
        con.close()


def columns(create_sql: str) -> list[str]:
    """The column names a CREATE TABLE statement defines (parsed by SQLite itself)."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute(create_sql)
        name = con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchone()[0]
        return [row[1] for row in con.execute(f'PRAGMA table_info("{name}")')]
    except sqlite3.Error:
        return []
    finally:
        con.close()


def differences(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What changed from `before` to `after`, one short phrase each; empty when the same."""
    out: list[str] = []
    for key in sorted(after.keys() - before.keys(), key=_order):
        kind, name = key.split(" ", 1)
        out.append(f"GlobalProperties gained row {name}" if kind == "property"
                   else f"{name} {kind} added")
    for key in sorted(before.keys() & after.keys(), key=_order):
        if before[key] == after[key]:
            continue
        kind, name = key.split(" ", 1)
        if kind == "table":
            old, new = columns(before[key]), columns(after[key])
            gained = [c for c in new if c not in old]
            lost = [c for c in old if c not in new]
            parts = ([f"gained {', '.join(gained)}"] if gained else []) + \
                    ([f"lost {', '.join(lost)}"] if lost else [])
            out.append(f"{name} " + (" and ".join(parts) if parts else "was redefined"))
        else:
            out.append(f"{name} {kind} replaced")
    for key in sorted(before.keys() - after.keys(), key=_order):
        kind, name = key.split(" ", 1)
        out.append(f"GlobalProperties lost row {name}" if kind == "property"
                   else f"{name} {kind} dropped")
    return out


def describe(version: str, before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    """"1.13.0 altered the index: ..." or None when the schema is the same."""
    found = differences(before, after)
    if not found:
        return None
    return f"{version} altered the index: " + "; ".join(found)


def _order(key: str) -> tuple[int, str]:
    kind, name = key.split(" ", 1)
    rank = KINDS.index(kind) if kind in KINDS else len(KINDS)
    return rank, name
