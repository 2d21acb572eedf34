"""Request bodies that stream an instance into the target without building it in Python.

- `RelayBody`: another server's answer (the source's GET /file), read into a
  fixed per-thread buffer and written to the target's socket.
- `FileBody`: an uncompressed storage file, sent with `socket.sendfile` (the
  kernel copies page cache to socket; Python never sees the bytes).
- `InflateBody`: a zlib-with-size storage file, inflated a bounded piece at a
  time; zlib's checksum and the declared size are checked before the last
  piece goes out, so a damaged file is cut short and never stored.

Each can compute the MD5 of what it sends (for --verify). A failure on the
body's own side raises BodyError: the transport then drops the connection in
the middle of the request, so the target stores nothing. File bodies can be
sent again (a retried POST); a relay body only once.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from http.client import HTTPException
from pathlib import Path

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.storage import Inflater, StorageFormatError, open_regular
from orchestrator.replication.transport import BodyError, Reply

BUFFER = 256 * 1024  # per worker thread, reused for every instance
_local = threading.local()


def _buffer() -> memoryview:
    view = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(BUFFER))
    return view


class RelayBody:
    """The rest of `reply`'s body (its length known), relayed through a fixed buffer."""

    def __init__(self, reply: Reply, what: str, md5: bool = False):
        assert reply.length is not None
        self.reply, self.what, self.length = reply, what, reply.length
        self._hash = hashlib.md5() if md5 else None

    @property
    def md5(self) -> str | None:
        return self._hash.hexdigest() if self._hash else None

    def send_to(self, sock: socket.socket) -> None:
        view, left = _buffer(), self.length
        while left:
            try:
                n = self.reply.readinto(view[:min(left, len(view))])
            except (OSError, HTTPException) as exc:
                self.reply.discard()
                raise BodyError(OrthancHttpError(f"{self.what}: the answer broke off "
                                                 f"({type(exc).__name__})",
                                                 transient=True)) from None
            if not n:
                self.reply.discard()
                raise BodyError(OrthancHttpError(f"{self.what}: the answer ended "
                                                 f"{left} bytes short", transient=True))
            if self._hash:
                self._hash.update(view[:n])
            sock.sendall(view[:n])
            left -= n
        self.reply.finish()


class FileBody:
    """An uncompressed storage file, checked against its size (and MD5, when given)."""

    def __init__(self, path: Path, max_size: int, size: int = 0, md5: str = "",
                 want_md5: bool = False):
        f, self.length = open_regular(path, max_size)
        f.close()
        if size and self.length != size:
            raise StorageFormatError(f"{self.length} bytes, the index says {size}")
        self.path, self.max_size, self.expected = path, max_size, md5.lower()
        self.md5: str | None = None
        if md5 or want_md5:
            self.md5 = self._digest()
            if md5 and self.md5 != self.expected:
                raise StorageFormatError("its content does not match the MD5 in the index "
                                         "(damaged on disk)")

    def _digest(self) -> str:
        f, _ = open_regular(self.path, self.max_size)
        with f:
            return hashlib.file_digest(f, "md5").hexdigest()

    def send_to(self, sock: socket.socket) -> None:
        try:
            f, size = open_regular(self.path, self.max_size)
        except StorageFormatError as exc:
            raise BodyError(exc) from None
        with f:
            if size != self.length:
                raise BodyError(StorageFormatError(f"changed size while sent ({size} bytes, "
                                                   f"was {self.length})"))
            sock.sendfile(f, 0, self.length)


class InflateBody:
    """A zlib-with-size storage file, inflated while sent."""

    def __init__(self, path: Path, max_size: int, size: int = 0, want_md5: bool = False):
        self.path, self.max_size, self.want_md5 = path, max_size, want_md5
        f, _ = open_regular(path, max_size)
        with f:
            self.length = Inflater(f, max_size).size
        if size and self.length != size:
            raise StorageFormatError(f"declares {self.length} bytes, the index says {size}")
        self.md5: str | None = None

    def send_to(self, sock: socket.socket) -> None:
        digest = hashlib.md5() if self.want_md5 else None
        try:
            f, _ = open_regular(self.path, self.max_size)
            with f:
                inflater = Inflater(f, self.max_size)
                if inflater.size != self.length:
                    raise StorageFormatError(f"changed while sent (declares {inflater.size} "
                                             f"bytes, was {self.length})")
                for piece in inflater.chunks(_buffer()):
                    if digest:
                        digest.update(piece)
                    sock.sendall(piece)
        except StorageFormatError as exc:
            raise BodyError(exc) from None
        if digest:
            self.md5 = digest.hexdigest()
