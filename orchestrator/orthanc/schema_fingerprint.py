"""The SQLite index's schema as a fingerprint, and what a new binary changed in it.

Newer Orthancs rewrite a schema-6 index at their first plain start and still
report DatabaseVersion 6 (1.12.7 adds `Labels`; 1.13.0 adds columns to
`AttachedFiles` and `Metadata`, a `DeletedFiles` table, replaces a trigger,
drops two indexes and adds GlobalProperties row 7; after that 1.10.1 fails
every store). Comparing DatabaseVersion says nothing: the fingerprint is every
`sqlite_master` row (type, name, SQL), every table's columns (from SQLite's own
`table_info`) and the GlobalProperties ids, as a flat mapping that a journal keeps
as it is: `{"table Resources": "CREATE TABLE ...", "column Resources.publicId": "2",
"property 7": ""}`.

`read_fingerprint` reads a stopped index without writing next to it
(`immutable=1`); when a WAL is left (a crash) the index and its WAL are read
from a private copy so that the WAL's pages count. `differences` and
`describe` are pure: two fingerprints in, sentences out.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping
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
        for kind, name, _ in rows:
            if kind == "table":
                for col in con.execute(f'PRAGMA table_info("{name}")'):
                    out[f"column {name}.{col[1]}"] = str(col[0])  # its position
        if "table GlobalProperties" in out:
            for (prop,) in con.execute("SELECT property FROM GlobalProperties"):
                out[f"property {prop}"] = ""
        return out
    except sqlite3.Error as exc:
        raise FingerprintError(f"cannot read the schema ({uri}): {exc}",
                               hint="is the service stopped? is this an Orthanc index?") from exc
    finally:
        con.close()


def differences(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """What changed from `before` to `after`, one short phrase each; empty when the same."""
    gained = _columns(after.keys() - before.keys(), after)
    lost = _columns(before.keys() - after.keys(), before)
    out: list[str] = []
    for key in sorted(after.keys() - before.keys(), key=_order):
        kind, name = key.split(" ", 1)
        if kind == "property":
            out.append(f"GlobalProperties gained row {name}")
        elif kind != "column":
            out.append(f"{name} {kind} added")
    for key in sorted(before.keys() & after.keys(), key=_order):
        kind, name = key.split(" ", 1)
        if before[key] == after[key] or kind == "column":
            continue
        if kind == "table":
            parts = ([f"gained {', '.join(gained[name])}"] if name in gained else []) + \
                    ([f"lost {', '.join(lost[name])}"] if name in lost else [])
            out.append(f"{name} " + (" and ".join(parts) if parts else "was redefined"))
        else:
            out.append(f"{name} {kind} replaced")
    for key in sorted(before.keys() - after.keys(), key=_order):
        kind, name = key.split(" ", 1)
        if kind == "property":
            out.append(f"GlobalProperties lost row {name}")
        elif kind != "column":
            out.append(f"{name} {kind} dropped")
    return out


def _columns(keys: Iterable[str], where: Mapping[str, str]) -> dict[str, list[str]]:
    """{table: [column, ...]} of the "column T.c" keys among `keys`, in the table's order."""
    out: dict[str, list[str]] = {}
    cols = [k for k in keys if k.startswith("column ")]
    for key in sorted(cols, key=lambda k: (k.split(".", 1)[0], int(where.get(k) or 0))):
        table, col = key.split(" ", 1)[1].split(".", 1)
        out.setdefault(table, []).append(col)
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
