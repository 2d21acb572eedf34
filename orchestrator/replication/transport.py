"""A lean, thread-safe HTTP client to one Orthanc, for bulk transfers.

One keep-alive `http.client` connection per worker thread. Measured on a
130 KB GET + POST (bench/replicate.py and docs/replication.md): requests costs
the client ~1.6 CPU-ms, urllib3 ~0.6, http.client ~0.35. On a host that also
runs Orthanc, client CPU is throughput lost, so the transfer path uses the
standard library directly. Answers of every status come back as data; only
connection trouble raises (OrthancHttpError, transient), and the caller's
retry policy decides.

Bodies need not be bytes: a `Body` streams itself into the connection's socket
(a file by sendfile, an inflater, or another server's answer read with `open`
into a fixed buffer), so an instance never becomes a Python bytes object.

Why a second client beside `orthanc/rest.py`: that one serves the upgrade
steps (a handful of calls per run: /system, /statistics) and raises on any
unexpected status; this one is the bulk path, where every status is data for
the retry policy, bodies are streamed, and each thread keeps its own
connection. Folding the steps onto this one is possible; the two share the
error type and the redaction rules.
"""

from __future__ import annotations

import base64
import http.client
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials

# Orthanc closes a keep-alive connection after 1 s idle: a request on such a
# stale connection fails at once and is resent on a fresh one without waiting.
_STALE = (http.client.RemoteDisconnected, http.client.CannotSendRequest, BrokenPipeError,
          ConnectionResetError, http.client.BadStatusLine)


@dataclass(frozen=True)
class Answer:
    status: int
    data: bytes = field(repr=False)
    content_type: str = ""


@runtime_checkable
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
    """An answer whose body is still on the wire: read it (all, or into a buffer), or
    `discard` it, before the next request on this thread's connection."""

    def __init__(self, endpoint: Endpoint, resp: http.client.HTTPResponse):
        self.endpoint, self._resp = endpoint, resp
        self.status = resp.status
        self.length: int | None = resp.length  # None: chunked, read it whole

    def readinto(self, buffer: memoryview) -> int:
        return self._resp.readinto(buffer)

    def read(self) -> bytes:
        data = self._resp.read()
        self.finish()
        return data

    def finish(self) -> None:
        """The body was read to its end: keep the connection unless the server closes it."""
        if self._resp.will_close:
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
        self.headers = {"Accept-Encoding": "identity"}  # gzip costs the source CPU per file
        if credentials is not None:
            token = f"{credentials.username}:{credentials.password}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def _connection(self, fresh: bool) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and not fresh and not _closed_by_peer(conn.sock):
            return conn
        if conn is not None:
            self._drop()
        if self.https:
            conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout[0],
                                               context=self.context)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout[0])
        conn.connect()
        conn.sock.settimeout(self.timeout[1])
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def request(self, method: str, path: str, body: bytes | Body | None = None,
                content_type: str | None = None) -> Answer:
        """Send one request and return the answer, whatever its status.

        Raises OrthancHttpError (transient) when no answer came: refused,
        reset, timed out. TLS verification failures are not transient. A
        streamed body's own failure raises BodyError (the connection is dropped).
        """
        resp = self._exchange(method, path, body, content_type)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            raise _connect_error(method, f"{self.base_url}{path}", exc) from None
        if resp.will_close:
            self._drop()
        return Answer(resp.status, data, resp.getheader("Content-Type", ""))

    def open(self, path: str) -> Reply:
        """GET `path` and return the answer with its body unread (see Reply)."""
        return Reply(self, self._exchange("GET", path, None, None))

    def _exchange(self, method: str, path: str, body: bytes | Body | None,
                  content_type: str | None) -> http.client.HTTPResponse:
        headers = self.headers if not content_type else {**self.headers,
                                                         "Content-Type": content_type}
        url = f"{self.base_url}{path}"
        reused = getattr(self._local, "conn", None) is not None
        streamed, sent = isinstance(body, Body), False
        for attempt in (0, 1):
            try:
                conn = self._connection(fresh=attempt > 0)
                if streamed:
                    conn.putrequest(method, self.prefix + path, skip_accept_encoding=True)
                    for name, value in headers.items():
                        conn.putheader(name, value)
                    conn.putheader("Content-Length", str(body.length))
                    conn.endheaders()
                    sent = True  # from here a retry would need the body again
                    body.send_to(conn.sock)
                else:
                    conn.request(method, self.prefix + path, body=body, headers=headers)
                return conn.getresponse()
            except BodyError:
                self._drop()  # the server holds a partial request: never complete it
                raise
            except _STALE as exc:
                self._drop()
                if attempt == 0 and reused and not (streamed and sent):
                    continue
                raise _connect_error(method, url, exc) from None
            except ssl.SSLCertVerificationError as exc:
                self._drop()
                raise OrthancHttpError(f"{method} {url}: TLS verification failed "
                                       f"({exc.verify_message})",
                                       hint="give the CA with --ca-bundle (or --insecure, "
                                       "knowingly)") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise _connect_error(method, url, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def discard(self) -> None:
        """Drop this thread's connection (an answer left unread, a request cut short)."""
        self._drop()

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: bytes | Body,
             content_type: str = "application/dicom") -> Answer:
        return self.request("POST", path, body, content_type)


def _closed_by_peer(sock: socket.socket | None) -> bool:
    """True when the server already closed this idle keep-alive connection (Orthanc does
    after ~1 s idle): a streamed body could not be sent again on a fresh one."""
    if sock is None:
        return True
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
    elif isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        reason = "connection closed"
    elif isinstance(exc, socket.gaierror):
        reason = "unknown host"
    return OrthancHttpError(f"{method} {url}: cannot connect ({reason})",
                            hint="is Orthanc running, and is the URL right?", transient=True)
