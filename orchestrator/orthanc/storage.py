"""An Orthanc storage folder read offline: attachments, compression, DICOM detection.

Layout (filesystem storage): `root/xx/yy/<uuid>`, where xx and yy are the first
two pairs of hex digits of the attachment's UUID; on Debian the SQLite `index`
sits in the same folder. Every file is immutable once written.

Two ways to find the full DICOM files:
- the stopped source's index (`AttachedFiles`), which says for each attachment
  its kind (1 dicom, 2 dicom-as-json, 3 dicom-until-pixel-data) and its
  compression (1 none, 2 zlib-with-size, as seen in Orthanc 1.10.1's index);
- the content alone: "DICM" at offset 128, possibly inside zlib-with-size.
  A DICOM whose top-level dataset has image attributes (Rows) but ends before
  PixelData is the truncated `dicom-until-pixel-data` attachment: posting it
  would create an instance without pixels and block the real file.

Every file is untrusted: symlinks are not followed, sizes are capped, and a
zlib stream may not inflate beyond the size its header declares.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import stat
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path
from urllib.parse import quote

from orchestrator.errors import InputError, RefusedError
from orchestrator.orthanc.index import INDEX_FILE, lock_holder

DEFAULT_MAX_SIZE = 1024 * 1024 * 1024  # largest instance read into memory (1 GiB)
ZLIB_HEADER = 8  # little-endian uint64 uncompressed size, then a zlib stream
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX2 = re.compile(r"^[0-9a-f]{2}$")


class FileType(IntEnum):
    """AttachedFiles.fileType (Orthanc's FileContentType)."""

    DICOM = 1
    DICOM_AS_JSON = 2
    DICOM_UNTIL_PIXEL_DATA = 3


class Compression(IntEnum):
    """AttachedFiles.compressionType (Orthanc's CompressionType)."""

    NONE = 1
    ZLIB_WITH_SIZE = 2


class Kind(Enum):
    """What a storage file is, judged by its content."""

    DICOM = "dicom"  # a full DICOM file: import it
    UNTIL_PIXEL_DATA = "dicom without its pixel data"  # the truncated attachment: never import
    NOT_DICOM = "not DICOM"  # the index, JSON summaries, anything else


class StorageFormatError(ValueError):
    """A storage file that cannot be what it claims (bad zlib, size mismatch, too large)."""


# -- zlib-with-size ------------------------------------------------------------

def declared_size(data: bytes) -> int:
    """Return the uncompressed size in the 8-byte header of a zlib-with-size blob."""
    if len(data) < ZLIB_HEADER:
        raise StorageFormatError("shorter than the 8-byte zlib-with-size header")
    return struct.unpack_from("<Q", data)[0]


def looks_zlib_with_size(head: bytes) -> bool:
    """True when `head` starts like zlib-with-size: a size, then a zlib header (CMF/FLG)."""
    if len(head) < ZLIB_HEADER + 2:
        return False
    cmf, flg = head[ZLIB_HEADER], head[ZLIB_HEADER + 1]
    return cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0


def decompress(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Inflate a zlib-with-size blob, refusing anything larger than declared or `max_size`.

    The declared size is checked before inflating and the inflater is bounded by
    it, so a zip bomb costs at most `declared + 1` bytes of memory.
    """
    size = declared_size(data)
    if size > max_size:
        raise StorageFormatError(f"declares {size} bytes uncompressed, more than the "
                                 f"limit of {max_size}")
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(memoryview(data)[ZLIB_HEADER:], size + 1)
    except zlib.error as exc:
        raise StorageFormatError(f"bad zlib stream: {exc}") from None
    if len(out) > size:
        raise StorageFormatError(f"inflates beyond its declared {size} bytes")
    if len(out) < size or not inflater.eof:
        raise StorageFormatError(f"inflates to {len(out)} bytes, not the declared {size}")
    return out


# -- DICOM content -------------------------------------------------------------

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
             b"UV"}
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_ROWS = (0x0028, 0x0010)
_ITEM, _ITEM_END, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF
IMPLICIT_LE, EXPLICIT_BE, DEFLATED = "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", \
    "1.2.840.10008.1.2.1.99"


def is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


class _Truncated(Exception):
    pass


class _Reader:
    """Walk DICOM elements without decoding values (enough to find top-level tags)."""

    def __init__(self, data: bytes | memoryview, pos: int, explicit: bool, little: bool):
        self.data, self.pos, self.explicit = data, pos, explicit
        self.u16, self.u32 = ("<H", "<I") if little else (">H", ">I")

    def _unpack(self, fmt: str, size: int) -> int:
        if self.pos + size > len(self.data):
            raise _Truncated
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def header(self, explicit: bool | None = None) -> tuple[tuple[int, int], bytes | None, int]:
        group = self._unpack(self.u16, 2)
        element = self._unpack(self.u16, 2)
        tag = (group, element)
        if tag in (_ITEM, _ITEM_END, _SEQ_END) or not (self.explicit if explicit is None
                                                       else explicit):
            return tag, None, self._unpack(self.u32, 4)
        if self.pos + 2 > len(self.data):
            raise _Truncated
        vr = bytes(self.data[self.pos:self.pos + 2])
        self.pos += 2
        if vr in _LONG_VRS:
            self.pos += 2
            return tag, vr, self._unpack(self.u32, 4)
        return tag, vr, self._unpack(self.u16, 2)

    def skip(self, length: int) -> None:
        if self.pos + length > len(self.data):
            raise _Truncated
        self.pos += length

    def skip_value(self, vr: bytes | None, length: int, explicit: bool | None = None) -> None:
        if length != _UNDEFINED:
            self.skip(length)
            return
        # Undefined length: a sequence (or UN / implicit holding one): walk its items.
        # Inside an undefined-length UN the items are implicit VR (PS3.5 6.2.2).
        if vr == b"UN":
            explicit = False
        while True:
            tag, _, item_len = self.header(explicit=False)
            if tag == _SEQ_END:
                return
            if tag != _ITEM:
                raise _Truncated
            if item_len != _UNDEFINED:
                self.skip(item_len)
                continue
            while True:
                tag, inner_vr, inner_len = self.header(explicit)
                if tag == _ITEM_END:
                    break
                self.skip_value(inner_vr, inner_len, explicit)


@dataclass(frozen=True)
class DicomFacts:
    """What the top level of a DICOM dataset holds, as far as import needs to know."""

    has_pixel_data: bool
    has_rows: bool
    truncated: bool  # ended inside an element: not a whole file

    @property
    def kind(self) -> Kind:
        # Orthanc stores dicom-until-pixel-data only for images: an image's
        # attributes without its pixels is that truncated copy. A DICOM without
        # Rows (a report, a key object...) is a whole object of its own.
        if self.has_pixel_data:
            return Kind.DICOM
        if self.has_rows or self.truncated:
            return Kind.UNTIL_PIXEL_DATA
        return Kind.DICOM


def dicom_facts(data: bytes | memoryview) -> DicomFacts:
    """Scan the top-level elements of a DICOM file (with its 128-byte preamble)."""
    meta = _Reader(data, 132, explicit=True, little=True)
    syntax = ""
    try:
        while meta.pos + 2 <= len(data) and struct.unpack_from("<H", data, meta.pos)[0] == 2:
            tag, vr, length = meta.header()
            if tag == (0x0002, 0x0010) and length != _UNDEFINED:
                syntax = bytes(data[meta.pos:meta.pos + length]).rstrip(b"\0 ").decode("ascii",
                                                                                     "replace")
            meta.skip_value(vr, length)
    except _Truncated:
        return DicomFacts(False, False, True)
    body, pos = data, meta.pos
    if syntax == DEFLATED:
        try:
            body, pos = zlib.decompressobj(-15).decompress(bytes(data[pos:]), DEFAULT_MAX_SIZE), 0
        except zlib.error:
            return DicomFacts(False, False, True)
    reader = _Reader(body, pos, explicit=syntax != IMPLICIT_LE, little=syntax != EXPLICIT_BE)
    has_rows = False
    try:
        while reader.pos < len(body):
            tag, vr, length = reader.header()
            if tag in _PIXEL_TAGS:
                return DicomFacts(True, has_rows, False)
            has_rows = has_rows or tag == _ROWS
            reader.skip_value(vr, length)
    except _Truncated:
        return DicomFacts(False, has_rows, True)
    return DicomFacts(False, has_rows, False)


def classify(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> tuple[Kind, bytes]:
    """Return the kind of a storage file's content and the DICOM bytes to send (if any).

    Raises StorageFormatError for a zlib-with-size blob that is corrupt or too large.
    """
    if is_dicom(data):
        return dicom_facts(data).kind, data
    if looks_zlib_with_size(data):
        try:
            inner = decompress(data, max_size)
        except StorageFormatError:
            # Plain data that happens to start like zlib-with-size is not DICOM;
            # a real zlib stream that is broken is worth reporting.
            if _inflates_at_all(data):
                raise
            return Kind.NOT_DICOM, b""
        if is_dicom(inner):
            return dicom_facts(inner).kind, inner
    return Kind.NOT_DICOM, b""


def _inflates_at_all(data: bytes) -> bool:
    try:
        zlib.decompressobj().decompress(data[ZLIB_HEADER:ZLIB_HEADER + 4096], 256)
        return True
    except zlib.error:
        return False


# -- files -----------------------------------------------------------------------

def read_file(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Read a regular file without following a symlink, refusing one above `max_size`."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise StorageFormatError(f"cannot open: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageFormatError("not a regular file")
        if st.st_size > max_size:
            raise StorageFormatError(f"{st.st_size} bytes, more than the limit of {max_size}")
        data = f.read(max_size + 1)
    if len(data) > max_size:
        raise StorageFormatError(f"grew beyond the limit of {max_size} bytes while read")
    return data


@dataclass(frozen=True)
class StorageEntry:
    """One thing met while walking a storage folder."""

    rel: str  # path relative to the root, with "/"
    path: Path
    problem: str | None = None  # set for what is skipped without reading (symlink, special file)


def walk(root: Path, after: str | None = None) -> Iterator[StorageEntry]:
    """Yield the files under `root` in a stable order (sorted names), never following links.

    `after`: resume after this relative path (as yielded earlier). Symlinks and
    special files are yielded with a `problem` and never opened.
    """
    after_parts = tuple(after.split("/")) if after else ()
    yield from _walk(root, (), after_parts)


def _walk(folder: Path, prefix: tuple[str, ...], after: tuple[str, ...],
          depth: int | None = None) -> Iterator[StorageEntry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield StorageEntry("/".join(prefix) or ".", folder, f"cannot list: {exc.strerror}")
        return
    for entry in entries:
        parts = prefix + (entry.name,)
        if after and parts < after[:len(parts)]:
            continue
        rel = "/".join(parts)
        try:
            if entry.is_symlink():
                yield StorageEntry(rel, Path(entry.path), "a symbolic link (not followed)")
            elif entry.is_dir(follow_symlinks=False):
                if depth == 0:
                    continue
                deeper = after if after and parts == after[:len(parts)] else ()
                yield from _walk(Path(entry.path), parts, deeper,
                                 None if depth is None else depth - 1)
            elif entry.is_file(follow_symlinks=False):
                if after and parts <= after:
                    continue
                yield StorageEntry(rel, Path(entry.path))
            else:
                yield StorageEntry(rel, Path(entry.path), "not a regular file")
        except OSError as exc:
            yield StorageEntry(rel, Path(entry.path), f"cannot stat: {exc.strerror}")


def walk_top(root: Path) -> Iterator[StorageEntry]:
    """Yield what stands directly in `root` besides folders (the index files, strays)."""
    for entry in _walk(root, (), (), depth=0):
        yield entry


def attachment_path(root: Path, uuid: str) -> Path:
    """Return `root/xx/yy/uuid`, refusing a UUID that is not one (no path tricks)."""
    if not UUID_RE.match(uuid):
        raise StorageFormatError(f"attachment UUID {uuid[:60]!r} is not a UUID")
    return root / uuid[0:2] / uuid[2:4] / uuid


# -- the index ---------------------------------------------------------------------

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
