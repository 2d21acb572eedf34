"""`orchestrator import-storage` from real Orthanc 1.10.1 storage folders (plain and compressed)."""

from __future__ import annotations

import os
import shutil
import struct
import zlib

import pytest

from tests.harness.dicom import make_dataset, make_instance
from tests.harness.orthanc import OrthancServer
from tests.harness.replication import child_env, count, md5s, parse_json, run_cli

pytestmark = pytest.mark.orthanc

COUNT = 120


def stopped_source(root, **overrides):
    server = OrthancServer(root, config_overrides=overrides)
    server.start()
    try:
        server.upload(make_dataset(COUNT, rows=64, cols=64))
        sums = md5s(server)
    finally:
        server.stop()
    return server, sums


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain-src")
    yield stopped_source(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    root = tmp_path_factory.mktemp("zlib-src")
    yield stopped_source(root, StorageCompression=True)
    shutil.rmtree(root, ignore_errors=True)


def imp(folder, target, state, *extra):
    return run_cli("import-storage", str(folder), target.url, "--state-dir", str(state), "--json",
                   *extra, env=child_env(TGT_PW=target.password or ""))


def test_plain_storage_with_its_index(plain, orthanc_factory, tmp_path):
    source, sums = plain
    target = orthanc_factory(username="bob", password="import-s3cret")
    result = run_cli("import-storage", str(source.storage), target.url, "--target-user", "bob",
                     "--target-password-env", "TGT_PW", "--state-dir", str(tmp_path), "--verify",
                     "--json", env=child_env(TGT_PW="import-s3cret"))
    assert result.returncode == 0, result.stderr
    data = parse_json(result.stdout)
    assert data["counts"]["copied"] == COUNT and data["verify"]["equal"] == COUNT
    assert data["skipped"] == {"not DICOM": 1}  # the SQLite index beside the files
    assert md5s(target) == sums
    assert "import-s3cret" not in result.stdout + result.stderr
    again = parse_json(imp(source.storage, target, tmp_path, "--full", "--target-user", "bob",
                           "--target-password-env", "TGT_PW").stdout)
    assert again["counts"]["already_present"] == COUNT and again["counts"]["copied"] == 0


@pytest.mark.parametrize("use_index", [True, False])
def test_compressed_storage_sends_only_whole_files(compressed, orthanc_factory, tmp_path,
                                                   use_index):
    source, sums = compressed
    target = orthanc_factory()
    extra = () if use_index else ("--no-index",)
    result = imp(source.storage, target, tmp_path, "--verify", *extra)
    assert result.returncode == 0, result.stderr
    data = parse_json(result.stdout)
    assert data["counts"]["copied"] == COUNT
    assert data["skipped"] == {"dicom-until-pixel-data (a copy without pixels: never imported)":
                               COUNT, "not DICOM": 1}
    assert md5s(target) == sums  # every instance with its pixels


def test_index_of_a_running_orthanc_is_refused(orthanc_factory, tmp_path):
    running = orthanc_factory()
    running.upload([make_instance(0, 0, 0, 0, rows=8, cols=8)])
    target = orthanc_factory()
    result = imp(running.storage, target, tmp_path)
    assert result.returncode == 1
    assert "locked" in parse_json(result.stdout)["error"]
    assert count(target) == 0


def test_hostile_files_are_reported_and_the_run_goes_on(tmp_path, orthanc_factory):
    folder = tmp_path / "storage"
    good = [make_instance(1, 0, 0, n, rows=16, cols=16) for n in range(3)]
    files = {
        "aa/bb/good0": good[0],
        "aa/bb/good1": struct.pack("<Q", len(good[1])) + zlib.compress(good[1]),
        "aa/cc/good2": good[2],
        "aa/cc/summary.json": b'{"MainDicomTags": {"PatientID": "x"}}',
        "aa/dd/bomb": struct.pack("<Q", 1 << 40) + zlib.compress(b"\0" * 100000),
        "aa/dd/liar": struct.pack("<Q", 2000) + zlib.compress(b"\0" * 100000),
        "aa/ee/cut": good[0][:good[0].rfind(b"\xe0\x7f\x10\x00")],
        "aa/ee/junk": os.urandom(5000),
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (tmp_path / "outside.dcm").write_bytes(make_instance(9, 0, 0, 0, rows=8, cols=8))
    os.symlink(tmp_path / "outside.dcm", folder / "aa" / "bb" / "link")
    os.symlink(tmp_path, folder / "escape")
    with open(folder / "aa" / "huge", "wb") as f:
        f.truncate(3 << 20)  # sparse: 3 MB of nothing, above --max-size 2
    target = orthanc_factory()
    result = imp(folder, target, tmp_path / "state", "--max-size", "2", "--verify")
    assert result.returncode == 1
    data = parse_json(result.stdout)
    assert data["counts"]["copied"] == 3 and count(target) == 3
    assert data["skipped"] == {
        "a symbolic link (not followed)": 2, "not DICOM": 2,
        "dicom-until-pixel-data (a copy without pixels: never imported)": 1}
    reasons = {f["item"]: f["reason"] for f in data["failures"]}
    assert set(reasons) == {"aa/dd/bomb", "aa/dd/liar", "aa/huge"}
    assert "more than the limit" in reasons["aa/dd/bomb"]
    assert "beyond its declared" in reasons["aa/dd/liar"]
    assert "more than the limit" in reasons["aa/huge"]


def test_killed_import_resumes_from_its_cursor(tmp_path, orthanc_factory):
    import signal

    from tests.harness.replication import start_cli, wait_for_count

    source = OrthancServer(tmp_path / "src", config_overrides={"StorageCompression": True})
    source.start()
    try:
        source.upload(make_dataset(300, rows=16, cols=16, seed="resume"))
        sums = md5s(source)
    finally:
        source.stop()
    target = orthanc_factory()
    state = tmp_path / "state"
    proc = start_cli("import-storage", str(source.storage), target.url, "--state-dir", str(state),
                     "--workers", "1")
    reached = wait_for_count(target, 150, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert reached, "the import ended before it could be killed"
    done = imp(source.storage, target, state)
    assert done.returncode == 0, done.stderr
    data = parse_json(done.stdout)
    assert data["resumed_from"].startswith("attachment row")
    assert data["counts"]["copied"] < 300
    assert md5s(target) == sums and count(target) == 300
    checked = parse_json(imp(source.storage, target, state, "--verify").stdout)
    assert checked["verify"]["ok"] and checked["verify"]["equal"] == 300  # all, not resumed


def _damage_one(folder, compression):
    """Flip a byte in the middle of one full-DICOM attachment; return its instance ID."""
    from orchestrator.orthanc import storage

    with storage.open_index(folder / "index") as con:
        att = next(a for a in storage.attachments(con)
                   if a.file_type == storage.FileType.DICOM and a.compression == compression)
    path = storage.attachment_path(folder, att.uuid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return att.instance_id


@pytest.mark.parametrize("kind", ["plain", "compressed"])
def test_a_file_damaged_on_disk_is_reported_and_never_stored(kind, request, orthanc_factory,
                                                             tmp_path):
    """Streamed bodies: plain files are checked against the index's MD5 before sendfile;
    compressed ones by zlib's checksum before their last byte is sent (the POST is cut)."""
    source, sums = request.getfixturevalue(kind)
    folder = tmp_path / "copy"
    shutil.copytree(source.storage, folder)
    damaged = _damage_one(folder, 1 if kind == "plain" else 2)
    target = orthanc_factory()
    result = imp(folder, target, tmp_path / "state")
    assert result.returncode == 1
    data = parse_json(result.stdout)
    assert data["counts"]["copied"] == COUNT - 1 and count(target) == COUNT - 1
    [failure] = data["failures"]
    assert ("damaged on disk" if kind == "plain" else "bad zlib stream") in failure["reason"]
    assert damaged not in md5s(target)
    assert {k: v for k, v in sums.items() if k != damaged} == md5s(target)
