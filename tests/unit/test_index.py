"""Index facts on real SQLite files shaped like Orthanc's (the real Orthanc is in integration)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator.orthanc.index as index_module
from orchestrator.errors import InputError
from orchestrator.orthanc.index import (index_files, index_is_locked, lock_holder, read_index,
                                        require_index)

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE GlobalProperties(property INTEGER PRIMARY KEY, value TEXT);
CREATE TABLE Resources(internalId INTEGER PRIMARY KEY, resourceType INTEGER, publicId TEXT,
                       parentId INTEGER);
INSERT INTO GlobalProperties VALUES (1, '{version}');
"""
# 2 patients, 3 studies, 4 series, 5 instances; Orthanc numbers the levels 1..4.
ROWS = [1] * 2 + [2] * 3 + [3] * 4 + [4] * 5


def make_index(folder: Path, version: str = "6", rows=ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / "index")
    con.executescript(SCHEMA.format(version=version))
    con.executemany("INSERT INTO Resources(resourceType) VALUES (?)", [(r,) for r in rows])
    con.commit()
    con.close()
    return folder


def side_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_reads_version_counts_and_tables_without_creating_files(tmp_path):
    folder = make_index(tmp_path / "db")
    before = side_files(folder)
    facts = read_index(folder)
    assert facts.schema_version == 6
    assert facts.counts == {"patients": 2, "studies": 3, "series": 4, "instances": 5}
    assert facts.tables == ("GlobalProperties", "Resources")
    assert (facts.locked, facts.wal_pending, facts.error) == (False, False, None)
    assert side_files(folder) == before == ["index"]  # no index-wal / index-shm left behind


def test_missing_index_is_a_fact_not_an_error(tmp_path):
    facts = read_index(tmp_path / "nothing")
    assert (facts.exists, facts.accessible, facts.error) == (False, True, None)
    with pytest.raises(InputError, match="no Orthanc index") as info:
        require_index(tmp_path / "nothing")
    assert "empty database" in info.value.hint


def test_not_an_orthanc_index(tmp_path):
    (tmp_path / "index").write_bytes(b"definitely not sqlite" * 100)
    facts = read_index(tmp_path)
    assert facts.exists and "not an Orthanc index" in facts.error
    with pytest.raises(InputError):
        require_index(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    sqlite3.connect(empty / "index").execute("CREATE TABLE x(y)").connection.commit()
    assert "no such table" in read_index(empty).error


def test_odd_version_values(tmp_path):
    assert read_index(make_index(tmp_path / "a", version="5")).schema_version == 5
    assert read_index(make_index(tmp_path / "b", version="six")).schema_version is None


HOLDER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA locking_mode=EXCLUSIVE")
con.execute("BEGIN IMMEDIATE"); con.execute("INSERT INTO Resources(resourceType) VALUES (4)")
con.execute("COMMIT")
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_process_holding_the_index_is_named(tmp_path):
    folder = make_index(tmp_path / "db")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / "index")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert lock_holder(folder / "index") == proc.pid
        assert index_is_locked(folder) and index_is_locked(folder / "index")
        facts = read_index(folder)
        assert facts.locked and facts.locked_by == proc.pid and facts.schema_version is None
        assert require_index(folder).locked
    finally:
        proc.communicate("\n", timeout=30)
    assert lock_holder(folder / "index") is None
    assert not index_is_locked(folder)


CRASHER = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA wal_autocheckpoint=0")
con.executemany("INSERT INTO Resources(resourceType) VALUES (?)", [(4,)] * 10)
os._exit(0)  # like a crash: no checkpoint, the WAL stays
"""


def test_a_crashed_index_is_read_from_a_private_copy(tmp_path):
    folder = make_index(tmp_path / "db")
    subprocess.run([sys.executable, "-c", CRASHER, str(folder / "index")], check=True)
    assert (folder / "index-wal").stat().st_size > 0
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    facts = read_index(folder)
    assert facts.wal_pending and facts.error is None
    assert facts.counts["instances"] == 15  # the 10 rows that only live in the WAL count
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    assert [p.name for p in index_files(folder)][:2] == ["index", "index-wal"]


def test_a_large_crashed_index_is_reported_not_copied(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "db")
    subprocess.run([sys.executable, "-c", CRASHER, str(folder / "index")], check=True)
    monkeypatch.setattr(index_module, "COPY_LIMIT", 10)
    facts = read_index(folder)
    assert facts.wal_pending and "not yet replayed" in facts.error
    assert facts.schema_version is None


def test_permission_denied_is_not_missing(tmp_path, monkeypatch):
    folder = make_index(tmp_path / "db")

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(Path, "exists", denied)
    facts = read_index(folder)
    assert (facts.exists, facts.accessible) == (False, False)
    assert "permission denied" in facts.error
    with pytest.raises(InputError, match="cannot read"):
        require_index(folder)
