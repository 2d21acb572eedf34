"""Orthanc's zlib-with-size format: an 8-byte little-endian uncompressed size, then a zlib stream.

A stream may not inflate beyond the size its header declares, nor beyond the
caller's limit: a zip bomb costs at most the declared size + 1 byte.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from enum import IntEnum
from typing import BinaryIO

from orchestrator.orthanc.storage.files import DEFAULT_MAX_SIZE, StorageFormatError

ZLIB_HEADER = 8  # little-endian uint64 uncompressed size, then a zlib stream


class Compression(IntEnum):
    """AttachedFiles.compressionType (Orthanc's CompressionType)."""

    NONE = 1
    ZLIB_WITH_SIZE = 2


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


def inflates_at_all(data: bytes) -> bool:
    try:
        zlib.decompressobj().decompress(data[ZLIB_HEADER:ZLIB_HEADER + 4096], 256)
        return True
    except zlib.error:
        return False


class Inflater:
    """Inflate a zlib-with-size file a bounded piece at a time (for streaming it out).

    `size` is the declared uncompressed size, read and checked against
    `max_size` before any inflating. `chunks()` yields pieces of at most `piece`
    bytes and raises StorageFormatError when the stream is corrupt or does not
    inflate to exactly `size` bytes; zlib's own Adler-32 checksum of the
    inflated data is checked at the end of the stream, so damage on disk is
    caught before the last piece is yielded.
    """

    def __init__(self, f: BinaryIO, max_size: int = DEFAULT_MAX_SIZE):
        self.f = f
        head = f.read(ZLIB_HEADER)
        self.size = declared_size(head)
        if self.size > max_size:
            raise StorageFormatError(f"declares {self.size} bytes uncompressed, more than the "
                                     f"limit of {max_size}")

    def chunks(self, buffer: memoryview, piece: int = 256 * 1024) -> Iterator[bytes]:
        """Yield the inflated data; `buffer` holds the compressed input read so far."""
        inflater = zlib.decompressobj()
        total = 0
        held: bytes | None = None  # the last piece is held back until the end is checked
        try:
            while not inflater.eof:
                n = self.f.readinto(buffer)
                if not n:
                    break
                data: bytes | memoryview = buffer[:n]
                while data and not inflater.eof:
                    out = inflater.decompress(data, piece)
                    data = inflater.unconsumed_tail
                    total += len(out)
                    if total > self.size:
                        raise StorageFormatError(f"inflates beyond its declared {self.size} "
                                                 "bytes")
                    if out:
                        if held is not None:
                            yield held
                        held = out
            rest = inflater.flush()  # output zlib still holds (at most its window)
            total += len(rest)
            if rest and total <= self.size:
                if held is not None:
                    yield held
                held = rest
        except zlib.error as exc:
            raise StorageFormatError(f"bad zlib stream: {exc}") from None
        if total != self.size or not inflater.eof:
            raise StorageFormatError(f"inflates to {total} bytes, not the declared {self.size}")
        if held is not None:
            yield held
