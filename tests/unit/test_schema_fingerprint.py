"""The index's schema fingerprint read from a real SQLite file, and what changed in words."""

from __future__ import annotations

import sqlite3

import pytest

from orchestrator.orthanc.schema_fingerprint import (FingerprintError, describe, differences,
                                                     read_fingerprint)

BASE = """
CREATE TABLE GlobalProperties(property INTEGER PRIMARY KEY, value TEXT);
INSERT INTO GlobalProperties VALUES(1, '6');
CREATE TABLE AttachedFiles(id INTEGER, fileType INTEGER, uuid TEXT);
CREATE TABLE Metadata(id INTEGER, type INTEGER, value TEXT);
CREATE INDEX DicomIdentifiersIndex2 ON Metadata(value);
CREATE TRIGGER AttachedFileDeleted AFTER DELETE ON AttachedFiles BEGIN SELECT 1; END;
"""
# What 1.13.0 does to a 1.10.1 index, in the same shape (ORTHANC.md, "Schema versions").
NEWER = """
ALTER TABLE AttachedFiles ADD COLUMN revision INTEGER;
ALTER TABLE AttachedFiles ADD COLUMN customData TEXT;
ALTER TABLE Metadata ADD COLUMN revision INTEGER;
CREATE TABLE DeletedFiles(uuid TEXT);
DROP TRIGGER AttachedFileDeleted;
CREATE TRIGGER AttachedFileDeleted AFTER DELETE ON AttachedFiles BEGIN SELECT 2; END;
DROP INDEX DicomIdentifiersIndex2;
INSERT INTO GlobalProperties VALUES(7, 'x');
"""


def _index(folder, script):
    con = sqlite3.connect(folder / "index")
    con.executescript(script)
    con.close()


def test_what_a_newer_binary_changed_is_told_table_by_table(tmp_path):
    _index(tmp_path, BASE)
    before = read_fingerprint(tmp_path)
    assert differences(before, read_fingerprint(tmp_path)) == []
    assert describe("1.13.0", before, before) is None
    _index(tmp_path, NEWER)
    text = describe("1.13.0", before, read_fingerprint(tmp_path))
    assert text == ("1.13.0 altered the index: DeletedFiles table added; GlobalProperties gained "
                    "row 7; AttachedFiles gained revision, customData; Metadata gained revision; "
                    "AttachedFileDeleted trigger replaced; DicomIdentifiersIndex2 index dropped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # nothing written beside it


def test_a_wal_left_by_a_crash_counts_and_is_read_from_a_private_copy(tmp_path):
    _index(tmp_path, BASE)
    before = read_fingerprint(tmp_path)
    con = sqlite3.connect(tmp_path / "index")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE Labels(id INTEGER, label TEXT)")
    con.commit()
    wal = (tmp_path / "index-wal").read_bytes()
    con.close()  # checkpoints: put the WAL back as a crash would leave it
    (tmp_path / "index-wal").write_bytes(wal)
    assert "Labels table added" in describe("1.12.7", before, read_fingerprint(tmp_path))


def test_a_missing_or_foreign_index_is_a_clear_error(tmp_path):
    with pytest.raises(FingerprintError, match="no SQLite index"):
        read_fingerprint(tmp_path)
    (tmp_path / "index").write_bytes(b"not a database" * 100)
    with pytest.raises(FingerprintError):
        read_fingerprint(tmp_path)

