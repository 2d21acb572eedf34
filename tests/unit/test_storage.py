"""Storage folder reading: zlib-with-size, DICOM content detection, walking, the index."""

from __future__ import annotations

import io
import os
import sqlite3
import struct
import zlib

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from orchestrator.errors import InputError
from orchestrator.orthanc import storage
from orchestrator.orthanc.storage import Kind, StorageFormatError
from tests.harness.dicom import make_instance

PIXEL_TAG = b"\xe0\x7f\x10\x00"


def zws(data: bytes, declared: int | None = None) -> bytes:
    """zlib-with-size as Orthanc writes it."""
    return struct.pack("<Q", len(data) if declared is None else declared) + zlib.compress(data)


def until_pixel_data(data: bytes) -> bytes:
    return data[:data.rfind(PIXEL_TAG)]


def make_file(syntax=ExplicitVRLittleEndian, *, image=True, icon=False, undefined_seq=False) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientID = "1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "P"
    item = Dataset()
    item.CodeValue = "X"
    if icon:
        icon_item = Dataset()
        icon_item.Rows, icon_item.Columns, icon_item.BitsAllocated = 2, 2, 8
        icon_item.PixelData = b"\x01\x02\x03\x04"
        ds.IconImageSequence = Sequence([icon_item])
    ds.ProcedureCodeSequence = Sequence([item])
    if undefined_seq:
        ds.ProcedureCodeSequence.is_undefined_length = True
    if image:
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 2, 2, 8, 1
        ds.PixelData = b"\x00\x01\x02\x03"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# -- zlib-with-size ---------------------------------------------------------------

def test_decompress_round_trip():
    data = make_instance(0, 0, 0, 0, rows=16, cols=16)
    assert storage.decompress(zws(data)) == data


@pytest.mark.parametrize("blob, message", [
    (b"\x01\x02", "shorter than"),
    (zws(b"a" * 1000, declared=10), "beyond its declared"),
    (zws(b"a" * 10, declared=1000), "not the declared"),
    (struct.pack("<Q", 10) + b"\x78\x9cgarbage-not-zlib", "bad zlib"),
    (zws(b"a" * 100)[:-6], "not the declared"),  # truncated stream
])
def test_decompress_refuses_lies(blob, message):
    with pytest.raises(StorageFormatError, match=message):
        storage.decompress(blob)


def test_zip_bomb_is_refused_before_inflating():
    bomb = struct.pack("<Q", 1 << 40) + zlib.compress(b"\0" * (1 << 20))
    with pytest.raises(StorageFormatError, match="more than the limit"):
        storage.decompress(bomb, max_size=1 << 20)
    # Lying small: the header says 1 KB, the stream holds 1 MB of zeros -> stops at 1 KB + 1.
    liar = struct.pack("<Q", 1024) + zlib.compress(b"\0" * (1 << 20))
    with pytest.raises(StorageFormatError, match="beyond its declared"):
        storage.decompress(liar)


# -- classification ------------------------------------------------------------------

def test_plain_and_compressed_dicom_are_dicom():
    data = make_instance(0, 0, 0, 0, rows=8, cols=8)
    assert storage.classify(data) == (Kind.DICOM, data)
    assert storage.classify(zws(data)) == (Kind.DICOM, data)


def test_until_pixel_data_is_recognised_plain_and_compressed():
    data = until_pixel_data(make_instance(0, 0, 0, 1, rows=8, cols=8))
    assert storage.classify(data)[0] is Kind.UNTIL_PIXEL_DATA
    assert storage.classify(zws(data))[0] is Kind.UNTIL_PIXEL_DATA


def test_a_dicom_without_image_attributes_is_a_whole_object():
    # A structured report or key object has no pixels and no Rows: it is imported.
    assert storage.classify(make_file(image=False))[0] is Kind.DICOM


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
@pytest.mark.parametrize("undefined", [False, True])
def test_nested_pixel_data_in_an_icon_does_not_count(syntax, undefined):
    whole = make_file(syntax, icon=True, undefined_seq=undefined)
    facts = storage.dicom_facts(whole)
    assert (facts.has_pixel_data, facts.has_rows, facts.truncated) == (True, True, False)
    cut = storage.dicom_facts(until_pixel_data(whole))
    assert (cut.has_pixel_data, cut.has_rows) == (False, True)
    assert cut.kind is Kind.UNTIL_PIXEL_DATA


@pytest.mark.parametrize("content", [
    b"", b"{\"MainDicomTags\": {}}", b"SQLite format 3\0" + b"\0" * 200, os.urandom(300),
    struct.pack("<Q", 5) + b"\x78\x9c" + b"\xff" * 40,  # zlib-looking header, not a stream
    struct.pack("<Q", 12) + zlib.compress(b"hello world!"),  # zlib-with-size, not DICOM
])
def test_other_content_is_not_dicom(content):
    assert storage.classify(content)[0] is Kind.NOT_DICOM


def test_a_truncated_dicom_header_is_not_a_whole_file():
    data = make_instance(0, 0, 0, 0, rows=8, cols=8)
    assert storage.dicom_facts(data[:140]).truncated


# -- files and walking ----------------------------------------------------------------

def test_walk_is_sorted_resumable_and_never_follows_links(tmp_path):
    root = tmp_path / "storage"
    for rel in ("ab/cd/2", "ab/cd/1", "00/11/x", "index"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "f").write_bytes(b"secret")
    os.symlink(outside, root / "ab" / "link-dir")
    os.symlink(outside / "f", root / "ab" / "cd" / "link-file")
    os.mkfifo(root / "ab" / "fifo")
    got = [(e.rel, e.problem) for e in storage.walk(root)]
    assert got == [("00/11/x", None), ("ab/cd/1", None), ("ab/cd/2", None),
                   ("ab/cd/link-file", "a symbolic link (not followed)"),
                   ("ab/fifo", "not a regular file"),
                   ("ab/link-dir", "a symbolic link (not followed)"), ("index", None)]
    assert [e.rel for e in storage.walk(root, after="ab/cd/1")] == [
        "ab/cd/2", "ab/cd/link-file", "ab/fifo", "ab/link-dir", "index"]
    assert [e.rel for e in storage.walk_top(root)] == ["index"]
    with pytest.raises(StorageFormatError, match="cannot open"):
        storage.read_file(root / "ab" / "cd" / "link-file")


def test_read_file_caps_the_size(tmp_path):
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(10_000)
    assert len(storage.read_file(big, max_size=10_000)) == 10_000
    with pytest.raises(StorageFormatError, match="more than the limit"):
        storage.read_file(big, max_size=9_999)


@pytest.mark.parametrize("uuid", ["../../etc/passwd", "ABCDEF", "",
                                  "80943196-f32b-44d9-a4ab-95b24c92c32b/../x"])
def test_attachment_path_refuses_what_is_not_a_uuid(tmp_path, uuid):
    with pytest.raises(StorageFormatError, match="not a UUID"):
        storage.attachment_path(tmp_path, uuid)


# -- the index -------------------------------------------------------------------------

INDEX_SCHEMA = """
CREATE TABLE Resources(internalId INTEGER PRIMARY KEY AUTOINCREMENT, resourceType INTEGER,
                       publicId TEXT, parentId INTEGER);
CREATE TABLE AttachedFiles(id INTEGER, fileType INTEGER, uuid TEXT, compressedSize INTEGER,
                           uncompressedSize INTEGER, compressionType INTEGER,
                           uncompressedMD5 TEXT, compressedMD5 TEXT, PRIMARY KEY(id, fileType));
"""


def make_index(path, rows):
    con = sqlite3.connect(path)
    con.executescript(INDEX_SCHEMA)
    for n, (ftype, uuid, comp) in enumerate(rows):
        con.execute("INSERT INTO Resources VALUES (?, 4, ?, NULL)", (n + 1, f"id{n}"))
        con.execute("INSERT INTO AttachedFiles VALUES (?, ?, ?, 0, 10, ?, 'md5', 'md5')",
                    (n + 1, ftype, uuid, comp))
    con.commit()
    con.close()


def test_attachments_are_listed_in_rowid_order_from_a_cursor(tmp_path):
    index = tmp_path / "index"
    make_index(index, [(1, f"00000000-0000-0000-0000-00000000000{n}", 1 + n % 2) for n in range(5)])
    with storage.open_index(index) as con:
        rows = list(storage.attachments(con, batch=2))
        assert [r.rowid for r in rows] == [1, 2, 3, 4, 5]
        assert rows[1].compression == storage.Compression.ZLIB_WITH_SIZE
        assert rows[0].instance_id == "id0" and rows[0].md5 == "md5"
        assert [r.rowid for r in storage.attachments(con, after_rowid=3)] == [4, 5]
    assert sorted(os.listdir(tmp_path)) == ["index"]  # nothing written beside it


def test_open_index_refuses_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(InputError, match="no Orthanc index"):
        with storage.open_index(tmp_path / "index"):
            pass
    (tmp_path / "index").write_bytes(b"not sqlite" * 100)
    with pytest.raises(InputError, match="not an Orthanc index"):
        with storage.open_index(tmp_path / "index"):
            pass


def test_read_attachment_checks_size_and_compression(tmp_path):
    data = make_instance(0, 0, 0, 0, rows=8, cols=8)
    uuid = "0123abcd-0000-4000-8000-000000000001"
    path = storage.attachment_path(tmp_path, uuid)
    path.parent.mkdir(parents=True)
    path.write_bytes(zws(data))
    att = storage.Attachment(1, "x", 1, uuid, 2, len(data), "")
    assert storage.read_attachment(tmp_path, att) == data
    with pytest.raises(StorageFormatError, match="the index says"):
        storage.read_attachment(tmp_path, storage.Attachment(1, "x", 1, uuid, 2, len(data) - 1, ""))
    with pytest.raises(StorageFormatError, match="unknown compressionType"):
        storage.read_attachment(tmp_path, storage.Attachment(1, "x", 1, uuid, 7, len(data), ""))


# -- streaming inflater ------------------------------------------------------------------------

def _pieces(blob: bytes, max_size: int = 1 << 30, buffer: int = 4096, piece: int = 1000):
    inflater = storage.Inflater(io.BytesIO(blob), max_size)
    return inflater.size, list(inflater.chunks(memoryview(bytearray(buffer)), piece))


def test_inflater_streams_bounded_pieces_equal_to_decompress():
    data = os.urandom(30000) + b"\0" * 50000
    size, pieces = _pieces(zws(data))
    assert size == len(data) and b"".join(pieces) == data == storage.decompress(zws(data))
    assert max(len(p) for p in pieces) <= 1000


@pytest.mark.parametrize("blob, message", [
    (zws(b"\0" * 100000, declared=2000), "beyond its declared"),
    (zws(b"abc" * 1000, declared=5000), "not the declared"),
    (zws(b"abc" * 1000)[:-6], "not the declared"),
    (struct.pack("<Q", 10) + b"not zlib at all", "bad zlib stream"),
])
def test_inflater_refuses_liars_and_damage(blob, message):
    with pytest.raises(StorageFormatError, match=message):
        _pieces(blob)


def test_inflater_checks_the_declared_size_before_inflating():
    with pytest.raises(StorageFormatError, match="more than the limit"):
        storage.Inflater(io.BytesIO(zws(b"\0" * 100, declared=1 << 40)), max_size=1 << 20)


def test_inflater_holds_the_last_piece_until_the_checksum_passed():
    data = os.urandom(20000)
    blob = bytearray(zws(data, declared=len(data)))
    blob[-2] ^= 0xFF  # the Adler-32 trailer: every byte inflates, the check fails at the end
    inflater = storage.Inflater(io.BytesIO(bytes(blob)))
    got = []
    with pytest.raises(StorageFormatError, match="bad zlib stream"):
        for piece in inflater.chunks(memoryview(bytearray(4096)), 1000):
            got.append(piece)
    assert 0 < sum(map(len, got)) < len(data)  # the last piece never came out
