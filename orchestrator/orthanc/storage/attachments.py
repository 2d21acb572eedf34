"""A stopped Orthanc's attachments, from its SQLite index (AttachedFiles), and reading one.

For each attachment the index says its kind (1 dicom, 2 dicom-as-json,
3 dicom-until-pixel-data) and its compression (1 none, 2 zlib-with-size, as
seen in Orthanc 1.10.1's index), its uncompressed size and (when
StoreMD5ForAttachments was on) its MD5.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from urllib.parse import quote

from orchestrator.errors import InputError, RefusedError
from orchestrator.orthanc.index import INDEX_FILE, lock_holder
from orchestrator.orthanc.storage.compression import Compression, decompress
from orchestrator.orthanc.storage.files import (DEFAULT_MAX_SIZE, StorageFormatError,
                                                attachment_path, read_file)


class FileType(IntEnum):
    """AttachedFiles.fileType (Orthanc's FileContentType)."""

    DICOM = 1
    DICOM_AS_JSON = 2
    DICOM_UNTIL_PIXEL_DATA = 3


@dataclass(frozen=True)
class Attachment:
    """One row of AttachedFiles joined with its instance's public ID."""

    rowid: int
    instance_id: str
    file_type: int
    uuid: str
    compression: int
    size: int  # uncompressed
    md5: str  # uncompressed MD5 ("" when StoreMD5ForAttachments was off)


@contextlib.contextmanager
def open_index(index: Path) -> Iterator[sqlite3.Connection]:
    """Open a stopped Orthanc's SQLite index read-only, writing nothing next to it.

    A running Orthanc holds it locked: refuse. A non-empty `index-wal` (not closed
    cleanly) is replayed in a private copy.
    """
    if not index.is_file():
        raise InputError(f"no Orthanc index at {index}",
                         hint="give the stopped source's index with --index PATH")
    if lock_holder(index) is not None:
        raise RefusedError(f"{index} is locked: an Orthanc is running on this storage",
                         hint="stop that Orthanc first, or copy from it with `orchestrator replicate`")
    wal = index.with_name(index.name + "-wal")
    with contextlib.ExitStack() as stack:
        if wal.is_file() and wal.stat().st_size > 0:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orchestrator-idx-")))
            shutil.copyfile(index, tmp / INDEX_FILE)
            shutil.copyfile(wal, tmp / (INDEX_FILE + "-wal"))
            con = sqlite3.connect(str(tmp / INDEX_FILE))
        else:
            con = sqlite3.connect(f"file:{quote(str(index))}?mode=ro&immutable=1", uri=True)
        try:
            con.execute("SELECT id, fileType, uuid, compressionType FROM AttachedFiles LIMIT 1")
        except sqlite3.DatabaseError as exc:
            con.close()
            raise InputError(f"{index} is not an Orthanc index: {exc}",
                             hint="give the stopped source's index with --index PATH") from None
        try:
            yield con
        finally:
            con.close()


def attachments(con: sqlite3.Connection, after_rowid: int = 0,
                batch: int = 1000) -> Iterator[Attachment]:
    """Yield every attachment row in rowid order, after `after_rowid`, a batch at a time."""
    last = after_rowid
    while True:
        rows = con.execute(
            "SELECT a.rowid, r.publicId, a.fileType, a.uuid, a.compressionType, "
            "a.uncompressedSize, a.uncompressedMD5 FROM AttachedFiles a "
            "LEFT JOIN Resources r ON r.internalId = a.id "
            "WHERE a.rowid > ? ORDER BY a.rowid LIMIT ?", (last, batch)).fetchall()
        if not rows:
            return
        for rowid, public_id, ftype, uuid, comp, size, md5 in rows:
            yield Attachment(int(rowid), str(public_id or ""), int(ftype or 0), str(uuid or ""),
                             int(comp or 0), int(size or 0), str(md5 or ""))
        last = rows[-1][0]


def known_uuids(con: sqlite3.Connection) -> Iterator[str]:
    """Yield the UUID of every attachment (to tell the index's files from strays)."""
    for (uuid,) in con.execute("SELECT uuid FROM AttachedFiles"):
        yield str(uuid)


def read_attachment(root: Path, att: Attachment, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Return the uncompressed bytes of an attachment, checked against its row."""
    if att.size > max_size:
        raise StorageFormatError(f"{att.size} bytes, more than the limit of {max_size}")
    raw = read_file(attachment_path(root, att.uuid), max_size)
    if att.compression == Compression.ZLIB_WITH_SIZE:
        data = decompress(raw, max_size)
    elif att.compression == Compression.NONE:
        data = raw
    else:
        raise StorageFormatError(f"unknown compressionType {att.compression}")
    if att.size and len(data) != att.size:
        raise StorageFormatError(f"{len(data)} bytes, the index says {att.size}")
    return data
