"""HTTP/1.1 on one socket, as much as Orthanc needs and no more.

A request head is written as bytes; an answer's status line and headers are
parsed by hand (Content-Length, Transfer-Encoding, Connection, Content-Type);
its body is read by length, chunked, or to the end of the connection. The
bytes received past the head wait in a small buffer that body reads use
first, so a body can be relayed straight into another socket.

Measured (bench/replicate.py, notes in docs/replication.md): http.client costs
~0.2 CPU-ms per 130 KB POST, this ~0.05; on a host that also runs Orthanc, that
CPU is ingest lost.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # an answer head larger than this is not Orthanc's
RECV = 64 * 1024


class ProtocolError(OSError):
    """The peer's bytes are not an HTTP/1.x answer (or it closed mid-answer)."""


class ClosedError(ProtocolError):
    """The peer closed the connection before the first byte of an answer (a stale keep-alive
    connection: the request may be sent again on a fresh one)."""


@dataclass(frozen=True)
class Head:
    status: int
    length: int | None  # Content-Length; None: chunked or to the end of the connection
    chunked: bool
    close: bool  # the server closes the connection after this answer
    content_type: str = ""


class Wire:
    """One connection's bytes: write request heads and bodies, read answers."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = bytearray()
        self._pos = 0

    @property
    def pending(self) -> int:
        """Bytes received and not consumed yet."""
        return len(self._buf) - self._pos

    def _recv(self) -> int:
        data = self.sock.recv(RECV)
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data
        return len(data)

    def read_head(self) -> Head:
        """Read the next answer's status line and headers (1xx answers are skipped)."""
        while True:
            end = self._buf.find(b"\r\n\r\n", self._pos)
            while end < 0:
                if self.pending > MAX_HEAD:
                    raise ProtocolError("answer head too large")
                started = self.pending > 0
                if not self._recv():
                    raise (ProtocolError("connection closed inside an answer head") if started
                           else ClosedError("connection closed before an answer"))
                end = self._buf.find(b"\r\n\r\n", self._pos)
            head = bytes(self._buf[self._pos:end])
            self._pos = end + 4
            parsed = parse_head(head)
            if not 100 <= parsed.status < 200:
                return parsed

    def readinto(self, view: memoryview) -> int:
        """Read body bytes into `view` (the buffered ones first); 0 at end of connection."""
        if self.pending:
            n = min(len(view), self.pending)
            view[:n] = self._buf[self._pos:self._pos + n]
            self._pos += n
            return n
        return self.sock.recv_into(view)

    def send_pending(self, sock: socket.socket, limit: int) -> int:
        """Send up to `limit` buffered (received, unread) bytes to `sock`; return how many."""
        n = min(limit, self.pending)
        if n:
            with memoryview(self._buf) as view:
                sock.sendall(view[self._pos:self._pos + n])
            self._pos += n
        return n

    def read_body(self, head: Head) -> bytes:
        """Read the whole body of the answer `head` describes."""
        if head.status in (204, 304):
            return b""
        if head.chunked:
            return self._read_chunked()
        if head.length is None:
            while self._recv():
                pass
            return self._take(self.pending)
        while self.pending < head.length:
            if not self._recv():
                raise ProtocolError(f"connection closed {head.length - self.pending} bytes "
                                    "before the end of an answer")
        return self._take(head.length)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return data

    def _line(self) -> bytes:
        end = self._buf.find(b"\r\n", self._pos)
        while end < 0:
            if self.pending > MAX_HEAD or not self._recv():
                raise ProtocolError("bad chunked answer")
            end = self._buf.find(b"\r\n", self._pos)
        line = bytes(self._buf[self._pos:end])
        self._pos = end + 2
        return line

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            try:
                size = int(self._line().split(b";", 1)[0], 16)
            except ValueError:
                raise ProtocolError("bad chunk size in an answer") from None
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            while self.pending < size + 2:
                if not self._recv():
                    raise ProtocolError("connection closed inside a chunk")
            parts.append(self._take(size))
            self._pos += 2  # the chunk's CRLF


def parse_head(head: bytes) -> Head:
    """Parse an answer head (status line and header lines, without the blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP answer: {lines[0][:60]!r}")
    fields: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    chunked = b"chunked" in fields.get(b"transfer-encoding", b"").lower()
    length = None
    if not chunked and b"content-length" in fields:
        try:
            length = int(fields[b"content-length"])
        except ValueError:
            raise ProtocolError("bad Content-Length in an answer") from None
        if length < 0:
            raise ProtocolError("bad Content-Length in an answer")
    connection = fields.get(b"connection", b"").lower()
    old = parts[0] == b"HTTP/1.0"
    close = connection == b"close" or (old and connection != b"keep-alive") or \
        (length is None and not chunked)
    return Head(int(parts[1]), length, chunked, close,
                fields.get(b"content-type", b"").decode("latin-1"))
