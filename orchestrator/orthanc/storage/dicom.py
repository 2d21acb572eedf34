"""DICOM sniffing: is a storage file a whole DICOM, the truncated dicom-until-pixel-data
copy, or not DICOM at all (the index, JSON summaries, strays)?

"DICM" at offset 128, possibly inside zlib-with-size. A DICOM whose top-level
dataset has image attributes (Rows) but ends before PixelData is the truncated
`dicom-until-pixel-data` attachment: posting it would create an instance
without pixels and block the real file.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import Enum

from orchestrator.orthanc.storage.compression import (decompress, inflates_at_all,
                                                      looks_zlib_with_size)
from orchestrator.orthanc.storage.files import DEFAULT_MAX_SIZE, StorageFormatError


class Kind(Enum):
    """What a storage file is, judged by its content."""

    DICOM = "dicom"  # a full DICOM file: import it
    UNTIL_PIXEL_DATA = "dicom without its pixel data"  # the truncated attachment: never import
    NOT_DICOM = "not DICOM"  # the index, JSON summaries, anything else


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
            if inflates_at_all(data):
                raise
            return Kind.NOT_DICOM, b""
        if is_dicom(inner):
            return dicom_facts(inner).kind, inner
    return Kind.NOT_DICOM, b""
