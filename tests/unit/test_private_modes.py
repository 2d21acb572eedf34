"""Patient data stays private: real files, real modes and owners (the tests run as root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.host.changes import Changes
from orchestrator.host.files import Files

NOBODY = 65534
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="chown needs root (and uids: POSIX)")


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _owner(p: Path) -> tuple[int, int]:
    st = os.stat(p)
    return st.st_uid, st.st_gid


@pytest.fixture
def world(tmp_path):
    """An Orthanc-like folder (0755, index 0644) and a private state folder."""
    var = tmp_path / "var"
    db = var / "db-v6"
    db.mkdir(parents=True)
    db.chmod(0o755)
    (db / "index").write_bytes(b"SQLite format 3\0patients")
    (db / "index").chmod(0o644)
    (db / "ab").mkdir()
    (db / "ab" / "uuid").write_bytes(b"DICM")
    conf = tmp_path / "etc" / "orthanc.json"
    conf.parent.mkdir()
    conf.write_text('{"IndexDirectory": "x"}')
    conf.chmod(0o644)
    files = Files(Changes(dry=False))
    state = tmp_path / "state"
    files.add_private_root(state)
    return files, db, conf, state


def test_run_folders_snapshots_and_config_backups_are_private(world):
    files, db, conf, state = world
    snap = state / "orthanc" / "20261128-run" / "snapshot"
    files.make_dir(snap, like=db)
    for d in (state, state / "orthanc", snap.parent, snap):
        assert _mode(d) == 0o700, d
    files.copy([(db / "index", snap / "index")], "snapshot")
    assert _mode(snap / "index") == 0o600
    backup = snap.parent / "config-backup"
    files.make_dir(backup)
    files.copy([(conf, backup / "0-orthanc.json")], "back up")
    assert _mode(backup) == 0o700 and _mode(backup / "0-orthanc.json") == 0o600
    files.write(snap.parent / "note", b"x", "note")
    assert _mode(snap.parent / "note") == 0o600
    files.link([(db / "ab" / "uuid", snap / "attachments" / "ab" / "uuid")], "link")
    assert _mode(snap / "attachments") == _mode(snap / "attachments" / "ab") == 0o700
    files.precopy([(db / "index", snap / "again")], "pre-copy")
    assert _mode(snap / "again.orchestrator-tmp") == 0o600


@needs_root
def test_a_restored_index_keeps_the_mode_and_owner_of_the_one_it_replaces(world):
    files, db, _, state = world
    snap = state / "snap"
    files.make_dir(snap)
    files.copy([(db / "index", snap / "index")], "snapshot")
    os.chown(db / "index", NOBODY, NOBODY)
    (db / "index").chmod(0o640)
    (db / "index").write_bytes(b"changed by the new version")
    files.copy([(snap / "index", db / "index")], "restore")
    assert (db / "index").read_bytes() == b"SQLite format 3\0patients"
    assert _mode(db / "index") == 0o640 and _owner(db / "index") == (NOBODY, NOBODY)
    # Gone altogether: the folder's owner, its mode without execute bits.
    os.chown(db, NOBODY, NOBODY)
    db.chmod(0o750)
    (db / "index").unlink()
    files.copy([(snap / "index", db / "index")], "restore")
    assert _mode(db / "index") == 0o640 and _owner(db / "index") == (NOBODY, NOBODY)


@needs_root
def test_a_relocated_folder_copies_the_old_folders_mode_and_owner_and_the_index_its_mode(world):
    files, db, _, _ = world
    for p in (db, db / "index", db / "ab", db / "ab" / "uuid"):
        os.chown(p, NOBODY, NOBODY)
    db.chmod(0o750)
    (db / "index").chmod(0o640)
    to = db.parent / "db-v7"
    files.make_dir(to, like=db)
    files.copy([(db / "index", to / "index")], "relocate")
    files.link([(db / "ab" / "uuid", to / "ab" / "uuid")], "link")
    assert _mode(to) == 0o750 and _owner(to) == (NOBODY, NOBODY)
    assert _mode(to / "index") == 0o640 and _owner(to / "index") == (NOBODY, NOBODY)
    assert _owner(to / "ab") == (NOBODY, NOBODY)


def test_a_rewritten_config_keeps_its_mode(world):
    files, _, conf, _ = world
    conf.chmod(0o640)
    files.write(conf, b'{"IndexDirectory": "y"}', "rewrite")
    assert _mode(conf) == 0o640 and conf.read_bytes() == b'{"IndexDirectory": "y"}'


def test_outside_a_private_root_nothing_changes(tmp_path):
    files = Files(Changes(dry=False))
    src = tmp_path / "a"
    src.write_bytes(b"x")
    src.chmod(0o644)
    files.copy([(src, tmp_path / "b")], "copy")
    assert _mode(tmp_path / "b") == 0o644
