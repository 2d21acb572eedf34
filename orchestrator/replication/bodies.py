"""Request bodies that stream an instance into the target without building it in Python.

- `RelayBody`: another server's answer (the source's GET /file), spliced
  socket -> pipe -> socket in the kernel (Linux, plain HTTP, no MD5 wanted),
  else read into a fixed per-thread buffer and written to the target's socket.
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

try:
    import fcntl  # the splice pipe's size (Linux)
except ImportError:  # Windows: no fcntl, and no splice either (plain buffered copies)
    fcntl = None  # type: ignore[assignment]
import hashlib
import os
import select
import socket
import ssl
import threading
from pathlib import Path

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.storage import Inflater, StorageFormatError, open_regular
from orchestrator.replication.transport import BodyError, Reply

BUFFER = 256 * 1024  # per worker thread, reused for every instance
PIPE = 1024 * 1024  # the splice pipe's capacity, asked for (the default is 64 KB)
_SPLICE = hasattr(os, "splice")
_local = threading.local()


def _buffer() -> memoryview:
    view = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(BUFFER))
    return view


class RelayBody:
    """The rest of `reply`'s body (its length known), relayed into the target's socket."""

    def __init__(self, reply: Reply, what: str, md5: bool = False):
        assert reply.length is not None
        self.reply, self.what, self.length = reply, what, reply.length
        self._hash = hashlib.md5() if md5 else None

    @property
    def md5(self) -> str | None:
        return self._hash.hexdigest() if self._hash else None

    def send_to(self, sock: socket.socket) -> None:
        source = self.reply.wire.sock
        try:
            if _SPLICE and self._hash is None and not isinstance(source, ssl.SSLSocket) \
                    and not isinstance(sock, ssl.SSLSocket):
                left = self.length - self.reply.wire.send_pending(sock, self.length)
                _splice(source, sock, left, self._short)
            else:
                self._copy(sock)
        except _SourceError as exc:
            self.reply.discard()
            raise BodyError(OrthancHttpError(f"{self.what}: {exc}", transient=True)) from None
        self.reply.finish()

    def _short(self, left: int) -> None:
        raise _SourceError(f"the answer ended {left} bytes short")

    def _copy(self, sock: socket.socket) -> None:
        view, left = _buffer(), self.length
        while left:
            try:
                n = self.reply.readinto(view[:min(left, len(view))])
            except OSError as exc:
                raise _SourceError(f"the answer broke off ({type(exc).__name__})") from None
            if not n:
                self._short(left)
            if self._hash:
                self._hash.update(view[:n])
            sock.sendall(view[:n])
            left -= n


class _SourceError(Exception):
    """The relayed answer failed on the source's side."""


def _pipe() -> tuple[int, int]:
    pipe = getattr(_local, "pipe", None)
    if pipe is None:
        pipe = _local.pipe = os.pipe2(os.O_CLOEXEC)
        try:
            if fcntl is not None:
                fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE)
        except OSError:
            pass  # the default 64 KB works, with more splices
    return pipe


def _drop_pipe() -> None:
    pipe = getattr(_local, "pipe", None)
    _local.pipe = None
    if pipe is not None:
        os.close(pipe[0])
        os.close(pipe[1])


def _splice(source: socket.socket, target: socket.socket, left: int, short) -> None:
    """Move `left` bytes source -> pipe -> target in the kernel, waiting on both sockets
    with the sockets' own timeouts (they are non-blocking underneath)."""
    r, w = _pipe()
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    src, dst, held = source.fileno(), target.fileno(), 0
    timeout = int(1000 * (target.gettimeout() or 120))
    try:
        while left or held:
            moved = False
            if left:
                try:
                    n = os.splice(src, w, left, flags=flags)
                except BlockingIOError:
                    n = -1
                except OSError as exc:
                    raise _SourceError(f"the answer broke off ({type(exc).__name__})") from None
                if n == 0:
                    short(left)
                if n > 0:
                    left, held, moved = left - n, held + n, True
            if held:
                try:
                    k = os.splice(r, dst, held, flags=flags | (os.SPLICE_F_MORE if left else 0))
                except BlockingIOError:
                    k = 0
                held, moved = held - k, moved or k > 0
            if not moved:
                _wait(src if left else None, dst if held else None, timeout)
    except BaseException:
        _drop_pipe()  # it may hold part of this body: never let it leak into the next
        raise


def _wait(src: int | None, dst: int | None, timeout: int) -> None:
    poller = select.poll()
    if src is not None:
        poller.register(src, select.POLLIN)
    if dst is not None:
        poller.register(dst, select.POLLOUT)
    if not poller.poll(timeout):
        raise TimeoutError("no progress relaying the answer")


class _OpenFile:
    """A body read from one storage file, kept open from the checks to the last send."""

    def __init__(self, path: Path, max_size: int):
        self.file, self.size = open_regular(path, max_size)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


class FileBody(_OpenFile):
    """An uncompressed storage file, checked against its size (and MD5, when given), sent
    with sendfile; each send (a retried POST) starts again at byte 0."""

    def __init__(self, path: Path, max_size: int, size: int = 0, md5: str = "",
                 want_md5: bool = False):
        super().__init__(path, max_size)
        self.length = self.size
        self.md5: str | None = None
        try:
            if size and self.length != size:
                raise StorageFormatError(f"{self.length} bytes, the index says {size}")
            if md5 or want_md5:
                self.md5 = hashlib.file_digest(self.file, "md5").hexdigest()
                if md5 and self.md5 != md5.lower():
                    raise StorageFormatError("its content does not match the MD5 in the "
                                             "index (damaged on disk)")
        except BaseException:
            self.file.close()
            raise

    def send_to(self, sock: socket.socket) -> None:
        try:
            sent = sock.sendfile(self.file, 0, self.length)
        except OSError as exc:
            if isinstance(exc, ConnectionError | TimeoutError):
                raise
            raise BodyError(StorageFormatError(f"cannot read: {exc.strerror}")) from None
        if sent != self.length:
            raise BodyError(StorageFormatError(f"shrank while sent ({sent} of {self.length} "
                                               "bytes)"))


class InflateBody(_OpenFile):
    """A zlib-with-size storage file, inflated while sent."""

    def __init__(self, path: Path, max_size: int, size: int = 0, want_md5: bool = False):
        super().__init__(path, max_size)
        self.max_size, self.want_md5 = max_size, want_md5
        self.md5: str | None = None
        try:
            self.length = Inflater(self.file, max_size).size
            if size and self.length != size:
                raise StorageFormatError(f"declares {self.length} bytes, the index says {size}")
        except BaseException:
            self.file.close()
            raise

    def send_to(self, sock: socket.socket) -> None:
        digest = hashlib.md5() if self.want_md5 else None
        try:
            self.file.seek(0)
            for piece in Inflater(self.file, self.max_size).chunks(_buffer()):
                if digest:
                    digest.update(piece)
                sock.sendall(piece)
        except StorageFormatError as exc:
            raise BodyError(exc) from None
        if digest:
            self.md5 = digest.hexdigest()
