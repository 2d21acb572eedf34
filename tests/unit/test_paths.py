"""Paths judged on their real paths; input files that cannot hang (real files, a real FIFO)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.errors import ExitCode, InputError
from orchestrator.host.changes import Changes
from orchestrator.host.files import Files
from orchestrator.paths import (Overlap, is_inside, open_to_others, overlap, read_regular_file,
                                refuse_overlap)


@pytest.fixture
def storage(tmp_path):
    real = tmp_path / "var" / "db-v6"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)  # a symlinked StorageDirectory
    return real


def test_a_target_through_a_symlink_or_dotdot_is_judged_where_it_leads(tmp_path, storage):
    link = tmp_path / "link"
    assert overlap(link / "next", storage) is Overlap.INSIDE
    assert overlap(storage / ".." / "db-v6" / "next", storage) is Overlap.INSIDE
    assert overlap(tmp_path / "var" / "x" / ".." / "db-v6", link) is Overlap.SAME
    assert overlap(tmp_path / "var", link) is Overlap.CONTAINS
    assert overlap(tmp_path / "var" / "db-v7", link) is Overlap.APART
    assert overlap(tmp_path / "var" / "db-v6-next", storage) is Overlap.APART  # a prefix only
    assert is_inside(link / "a" / "b", storage) and is_inside(link, storage)
    assert not is_inside(tmp_path / "var", storage)
    files = Files(Changes(dry=False))
    assert files.is_inside(link / "next", storage)
    assert files.overlap(tmp_path / "var", link) is Overlap.CONTAINS


@pytest.mark.parametrize("to, words", [("link/next", "is inside"), ("var/db-v6/../db-v6", "same"),
                                       ("var", "is a parent of")])
def test_relocate_to_inside_equal_or_parent_is_refused_naming_real_paths(tmp_path, storage, to,
                                                                          words):
    with pytest.raises(InputError) as err:
        refuse_overlap(tmp_path / to, tmp_path / "link", what="relocate.to",
                       place="plan.yaml: steps[3].relocate.to")
    msg = err.value.message
    assert msg.startswith("plan.yaml: steps[3].relocate.to: relocate.to ")
    assert words in msg and str(storage) in msg and err.value.exit_code == ExitCode.BAD_INPUT
    refuse_overlap(tmp_path / "var" / "db-v7", tmp_path / "link", what="relocate.to")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs (Windows)")
def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as err:
        read_regular_file(fifo, 1 << 20, what="plan")  # would block forever without O_NONBLOCK
    assert err.value.message == f"{fifo}: is a FIFO (named pipe); the plan must be a regular file"


@pytest.mark.parametrize("path, kind", [("/dev/null", "a character device"), ("/", "a folder")])
def test_devices_and_folders_are_refused(path, kind):
    with pytest.raises(InputError, match=kind):
        read_regular_file(path, 100, what="config")


def test_a_regular_file_is_read_and_a_large_one_refused(tmp_path):
    f = tmp_path / "orthanc.json"
    f.write_bytes(b"{}")
    assert read_regular_file(f, 2) == b"{}"
    with pytest.raises(InputError, match="more than 1"):
        read_regular_file(f, 1)
    with pytest.raises(InputError, match="cannot read"):
        read_regular_file(tmp_path / "missing", 10)
    (tmp_path / "ln").symlink_to(f)  # a symlink to a regular file is a regular file
    assert read_regular_file(tmp_path / "ln", 10) == b"{}"


@pytest.fixture
def open_tree():
    """A folder whose parents are all open to others (tmp_path's are not: pytest makes 0700)."""
    base = Path(tempfile.mkdtemp(prefix="orchestrator-paths-"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows: ACLs, not mode bits")
def test_a_storage_folder_open_to_every_user_is_found(open_tree, tmp_path):
    if not all(p.stat().st_mode & 0o001 for p in open_tree.parents):
        pytest.skip("the temporary folder's parents are closed to others")
    var = open_tree / "var"
    db = var / "db-v6"
    db.mkdir(parents=True)
    var.chmod(0o755)
    db.chmod(0o755)
    (open_tree / "link").symlink_to(db)
    assert open_to_others(open_tree / "link") == db
    db.chmod(0o750)  # Debian's /var/lib/orthanc
    assert open_to_others(db) is None
    db.chmod(0o755)
    var.chmod(0o750)  # a closed parent protects everything below it
    assert open_to_others(db) is None
    (tmp_path / "db").mkdir(mode=0o755)
    assert open_to_others(tmp_path / "db") is None  # pytest's own folder is 0700
