"""A lean, thread-safe HTTP client to one Orthanc, for bulk transfers.

One keep-alive `http.client` connection per worker thread. Measured on a
130 KB GET + POST (bench/replicate.py and docs/replication.md): requests costs
the client ~1.6 CPU-ms, urllib3 ~0.6, http.client ~0.35. On a host that also
runs Orthanc, client CPU is throughput lost, so the transfer path uses the
standard library directly. Answers of every status come back as data; only
connection trouble raises (OrthancHttpError, transient), and the caller's
retry policy decides.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
from dataclasses import dataclass, field
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
        if conn is not None and not fresh:
            return conn
        if conn is not None:
            conn.close()
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

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> Answer:
        """Send one request and return the answer, whatever its status.

        Raises OrthancHttpError (transient) when no answer came: refused,
        reset, timed out. TLS verification failures are not transient.
        """
        headers = self.headers if not content_type else {**self.headers,
                                                         "Content-Type": content_type}
        url = f"{self.base_url}{path}"
        reused = getattr(self._local, "conn", None) is not None
        for attempt in (0, 1):
            try:
                conn = self._connection(fresh=attempt > 0)
                conn.request(method, self.prefix + path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._drop()
                return Answer(resp.status, data, resp.getheader("Content-Type", ""))
            except _STALE as exc:
                self._drop()
                if attempt == 0 and reused:
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

    def post(self, path: str, body: bytes, content_type: str = "application/dicom") -> Answer:
        return self.request("POST", path, body, content_type)


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
