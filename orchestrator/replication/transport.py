"""A lean, thread-safe HTTP client to one Orthanc, for bulk transfers.

One keep-alive connection per worker thread, speaking HTTP/1.1 through
`wire.Wire`. Measured on a 130 KB GET + POST (bench/replicate.py and
docs/replication.md): requests costs the client ~1.6 CPU-ms, urllib3 ~0.6,
http.client ~0.35, this ~0.15. On a host that also runs Orthanc, client CPU is
ingest lost. Answers of every status come back as data; only connection
trouble raises (OrthancHttpError, transient), and the caller's retry policy
decides.

Bodies need not be bytes: a `Body` streams itself into the connection's socket
(a file by sendfile, an inflater, or another server's answer read with `open`
into a fixed buffer), so an instance never becomes a Python bytes object.

Why a second client beside `orthanc/rest.py`: that one serves the upgrade
steps (a handful of calls per run: /system, /statistics), raises on any
unexpected status and belongs to the `orthanc` layer, which replication sits
above; this one is the bulk path, where every status is data for the retry
policy, bodies are streamed and each thread keeps its own connection. Both
raise the same OrthancHttpError and never put a password in a message.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials
from orchestrator.replication.wire import ClosedError, Head, Wire


@dataclass(frozen=True)
class Answer:
    status: int
    data: bytes = field(repr=False)
    content_type: str = ""


class Body(Protocol):
    """A request body that streams itself; `length` is known before the first byte."""

    length: int

    def send_to(self, sock: socket.socket) -> None:
        """Write exactly `length` bytes to `sock`; raise BodyError when the body cannot be
        produced (the request is then cut short, so the server stores nothing)."""


class BodyError(Exception):
    """A streamed body failed on its own side (a file, an inflater, another server)."""

    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


class Reply:
    """An answer whose body is still on the wire: read it (all, or `readinto` exactly
    `length` bytes then `finish`), or `discard` it, before the next request on this thread."""

    def __init__(self, endpoint: Endpoint, wire: Wire, head: Head):
        self.endpoint, self.wire, self.head = endpoint, wire, head
        self.status = head.status
        self.length = head.length  # None: chunked or to the end of the connection

    def readinto(self, view: memoryview) -> int:
        return self.wire.readinto(view)

    def read(self) -> bytes:
        try:
            data = self.wire.read_body(self.head)
        except OSError as exc:
            self.discard()
            raise _connect_error("GET", self.endpoint.base_url, exc) from None
        self.finish()
        return data

    def finish(self) -> None:
        """The body was read to its end: keep the connection unless the server closes it."""
        if self.head.close:
            self.endpoint.discard()

    def discard(self) -> None:
        self.endpoint.discard()


class Endpoint:
    """One Orthanc at `base_url` (no credentials inside it)."""

    def __init__(self, base_url: str, credentials: Credentials | None = None, *,
                 verify: bool = True, ca_bundle: str | None = None,
                 timeout: tuple[float, float] = (5.0, 120.0), pool_size: int = 8):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if self.https:
            if verify:
                self.context = ssl.create_default_context(cafile=ca_bundle)
            else:
                self.context = ssl._create_unverified_context()  # explicit --insecure
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == (443 if self.https else 80)
        lines = [f"Host: {host}" + ("" if default else f":{self.port}"),
                 "Accept-Encoding: identity"]  # gzip costs the source CPU per file
        if credentials is not None:
            token = f"{credentials.username}:{credentials.password}".encode()
            lines.append("Authorization: Basic " + base64.b64encode(token).decode("ascii"))
        self._fixed = ("".join(f"{line}\r\n" for line in lines)).encode("latin-1")
        self._local = threading.local()
        self._all: list[socket.socket] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            socks, self._all = self._all, []
        for sock in socks:
            sock.close()

    def _connection(self, fresh: bool) -> Wire:
        wire = getattr(self._local, "wire", None)
        if wire is not None and not fresh and not wire.pending and \
                not _closed_by_peer(wire.sock):
            return wire
        if wire is not None:
            self._drop()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout[0])
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.timeout[1])
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        wire = self._local.wire = Wire(sock)
        with self._lock:
            self._all.append(sock)
        return wire

    def _head(self, method: str, path: str, content_type: str | None, length: int | None) -> bytes:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        if content_type:
            head += f"Content-Type: {content_type}\r\n".encode("latin-1")
        if length is not None:
            head += b"Content-Length: %d\r\n" % length
        return head + b"\r\n"

    def request(self, method: str, path: str, body: bytes | Body | None = None,
                content_type: str | None = None) -> Answer:
        """Send one request and return the answer, whatever its status.

        Raises OrthancHttpError (transient) when no answer came: refused,
        reset, timed out. TLS verification failures are not transient. A
        streamed body's own failure raises BodyError (the connection is dropped).
        """
        wire, head = self._exchange(method, path, body, content_type)
        try:
            data = wire.read_body(head)
        except OSError as exc:
            self._drop()
            raise _connect_error(method, f"{self.base_url}{path}", exc) from None
        if head.close:
            self._drop()
        return Answer(head.status, data, head.content_type)

    def open(self, path: str) -> Reply:
        """GET `path` and return the answer with its body unread (see Reply)."""
        wire, head = self._exchange("GET", path, None, None)
        return Reply(self, wire, head)

    def _exchange(self, method: str, path: str, body: bytes | Body | None,
                  content_type: str | None) -> tuple[Wire, Head]:
        url = f"{self.base_url}{path}"
        reused = getattr(self._local, "wire", None) is not None
        streamed = body is not None and not isinstance(body, bytes | bytearray)
        length = None if body is None else (body.length if streamed else len(body))
        head = self._head(method, path, content_type, length)
        sent = False
        for attempt in (0, 1):
            try:
                wire = self._connection(fresh=attempt > 0)
                if streamed:
                    wire.sock.sendall(head)
                    sent = True  # from here a retry would need the body again
                    body.send_to(wire.sock)
                elif body and len(body) > 16384:
                    wire.sock.sendall(head)  # two sends rather than a copy of the body
                    wire.sock.sendall(body)
                else:
                    wire.sock.sendall(head + body if body else head)
                return wire, wire.read_head()
            except BodyError:
                self._drop()  # the server holds a partial request: never complete it
                raise
            except ssl.SSLCertVerificationError as exc:
                self._drop()
                raise OrthancHttpError(f"{method} {url}: TLS verification failed "
                                       f"({exc.verify_message})",
                                       hint="give the CA with --ca-bundle (or --insecure, "
                                       "knowingly)") from None
            except (ClosedError, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if attempt == 0 and reused and not (streamed and sent):
                    continue  # a stale keep-alive connection: once more on a fresh one
                raise _connect_error(method, url, exc) from None
            except OSError as exc:
                self._drop()
                raise _connect_error(method, url, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def discard(self) -> None:
        """Drop this thread's connection (an answer left unread, a request cut short)."""
        self._drop()

    def _drop(self) -> None:
        wire = getattr(self._local, "wire", None)
        self._local.wire = None
        if wire is not None:
            wire.sock.close()
            with self._lock:
                if wire.sock in self._all:
                    self._all.remove(wire.sock)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: bytes | Body,
             content_type: str = "application/dicom") -> Answer:
        return self.request("POST", path, body, content_type)


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the server already closed this idle keep-alive connection (Orthanc does
    after ~1 s idle): a streamed body could not be sent again on a fresh one."""
    # Readable while idle: the server's EOF (or stray bytes): either way, start afresh.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _connect_error(method: str, url: str, exc: BaseException) -> OrthancHttpError:
    if isinstance(exc, TimeoutError | socket.timeout):
        return OrthancHttpError(f"{method} {url}: no answer in time",
                                hint="Orthanc is overloaded or hung", transient=True)
    reason = type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, ConnectionResetError | ClosedError | BrokenPipeError):
        reason = "connection closed"
    elif isinstance(exc, socket.gaierror):
        reason = "unknown host"
    return OrthancHttpError(f"{method} {url}: cannot connect ({reason})",
                            hint="is Orthanc running, and is the URL right?", transient=True)
