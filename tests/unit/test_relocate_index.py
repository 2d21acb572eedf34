"""relocate's post-stop delta from the stopped index's attachment list (no folder listing),
on real files and a real SQLite index in a temp folder."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from orchestrator.host.changes import Changes
from orchestrator.host.files import Files
from orchestrator.orthanc.index import attachment_paths
from orchestrator.steps.folders import INDEX_NAMES, LAYOUT_DEPTH, RECORDED, delta

UUIDS = ["0a1b2c3d-0000-0000-0000-000000000001", "0a1b9999-0000-0000-0000-000000000002",
         "ff00aaaa-0000-0000-0000-000000000003"]


def _rel(uuid: str) -> str:
    return os.path.join(uuid[:2], uuid[2:4], uuid)


def _index(path: Path, uuids: list[str]) -> None:
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE AttachedFiles(id INTEGER, fileType INTEGER, uuid TEXT)")
    con.executemany("INSERT INTO AttachedFiles VALUES (1, 1, ?)", [(u,) for u in uuids])
    con.commit()
    con.close()


def _storage(root: Path, uuids: list[str]) -> Path:
    for u in uuids:
        (root / _rel(u)).parent.mkdir(parents=True, exist_ok=True)
        (root / _rel(u)).write_bytes(u.encode())
    _index(root / "index", uuids)
    return root


class Ctx:
    def __init__(self) -> None:
        self.cache: dict = {}


class Host:
    def __init__(self, dry: bool = False) -> None:
        self.files = Files(Changes(dry=dry))


def _stage(host: Host, ctx: Ctx, storage: Path, to: Path) -> None:
    got = host.files.mirror(storage, to, skip=INDEX_NAMES, depth=LAYOUT_DEPTH, label="stage")
    ctx.cache[("staged", str(to))] = RECORDED if got is None else got


def test_attachment_paths_reads_the_layout_of_a_stopped_index(tmp_path):
    _index(tmp_path / "index", UUIDS)
    assert attachment_paths(tmp_path) == {_rel(u) for u in UUIDS}
    assert not (tmp_path / "index-wal").exists() and not (tmp_path / "index-shm").exists()
    assert attachment_paths(tmp_path / "missing") is None
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / "index").execute("CREATE TABLE t(x)").connection.close()
    assert attachment_paths(tmp_path / "other") is None  # not an Orthanc index


def test_added_and_deleted_since_staging_come_from_the_index_without_listing_folders(tmp_path):
    storage, to = _storage(tmp_path / "db-v6", UUIDS), tmp_path / "db-v7"
    (storage / "0a" / "1b" / "orphan").write_bytes(b"not in the index")
    host, ctx = Host(), Ctx()
    _stage(host, ctx, storage, to)
    assert os.path.samefile(to / _rel(UUIDS[0]), storage / _rel(UUIDS[0]))
    new = "0a1b7777-0000-0000-0000-000000000004"
    (storage / _rel(new)).write_bytes(b"arrived")
    (storage / _rel(UUIDS[2])).unlink()
    _index(storage / "index", [UUIDS[0], UUIDS[1], new])

    def no_listing(*args, **kwargs):
        raise AssertionError("listed a folder")

    host.files.list_files = host.files.walk = host.files.dir_mtimes = no_listing
    added, gone = delta(host, ctx, storage, to, storage)
    assert (added, gone) == ([_rel(new)], [_rel(UUIDS[2])])  # the orphan stays as staged


def test_without_a_readable_index_the_folder_times_still_find_the_changes(tmp_path):
    storage, to = _storage(tmp_path / "db-v6", UUIDS), tmp_path / "db-v7"
    host, ctx = Host(), Ctx()
    _stage(host, ctx, storage, to)
    (storage / "index").write_bytes(b"not sqlite")
    (storage / _rel(UUIDS[1])).unlink()
    assert delta(host, ctx, storage, to, storage) == ([], [_rel(UUIDS[1])])


def test_a_dry_run_stage_lists_nothing_and_leaves_nothing_to_link(tmp_path):
    storage, to = _storage(tmp_path / "db-v6", UUIDS), tmp_path / "db-v7"
    host, ctx = Host(dry=True), Ctx()

    def no_listing(*args, **kwargs):
        raise AssertionError("listed a folder")

    host.files.walk = host.files.dir_mtimes = no_listing
    _stage(host, ctx, storage, to)
    assert host.files.changes.texts() == ["stage"] and not to.exists()
    assert delta(host, ctx, storage, to, storage) == ([], [])
