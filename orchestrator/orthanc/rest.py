"""A small Orthanc REST client for the upgrade steps: keep-alive connection, timeouts,
redacted errors.

Every answer is treated as untrusted: JSON is checked for the expected shape
and errors name the URL without its password.

It is one of two HTTP clients to Orthanc, on purpose: this one makes a handful
of calls per run (/system, /statistics, a store probe) and raises on any
unexpected status; `replication/transport.py` is the bulk path (streamed
bodies, every status as data for its retry policy, a connection per worker
thread, ~0.15 CPU-ms per instance where requests costs ~1.6). The steps sit
below `replication` in the layers and cannot import it. Both raise the same
OrthancHttpError, with the status as data and no password in a message.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials

DEFAULT_TIMEOUT = (5.0, 120.0)  # (connect, read) seconds
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


@dataclass(frozen=True)
class Response:
    """One answer: its status and body."""

    status_code: int
    content: bytes = field(repr=False)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class OrthancClient:
    """Talk to one Orthanc at `base_url` (no credentials inside the URL).

    One keep-alive connection (http.client: the standard library's, which starts in a
    fraction of `requests`' import time, and uses no proxy, which would see our
    credentials); a call is serialised with the others. `pool_size` is accepted for
    compatibility and unused.
    """

    def __init__(self, base_url: str, credentials: Credentials | None = None, *,
                 verify: bool | str = True, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 pool_size: int = 10):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.verify = verify
        parts = urlsplit(self.base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if credentials is not None:
            user, password = credentials.as_auth()
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw -----------------------------------------------------------------
    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,),
                timeout: tuple[float, float] | None = None, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """Send one request; raise OrthancHttpError unless the status is in `expect`."""
        url = f"{self.base_url}{path}"
        try:
            with self._lock:
                resp = self._send(method, path, timeout or self.timeout, data, headers or {})
        except ssl.SSLError as exc:
            raise OrthancHttpError(f"{method} {url}: TLS verification failed",
                                   hint="give the CA with --ca-bundle (or --insecure, knowingly)") from exc
        except TimeoutError as exc:
            raise OrthancHttpError(f"{method} {url}: no answer in time",
                                   hint="Orthanc is overloaded or hung", transient=True) from exc
        except OSError as exc:
            raise OrthancHttpError(f"{method} {url}: cannot connect",
                                   hint="is Orthanc running, and is the URL right?",
                                   transient=True) from exc
        except http.client.HTTPException as exc:
            raise OrthancHttpError(f"{method} {url}: {type(exc).__name__}", transient=True) from exc
        if resp.status_code not in expect:
            raise http_error(method, url, resp)
        return resp

    def _send(self, method: str, path: str, timeout: tuple[float, float], data: bytes | None,
              headers: dict[str, str]) -> Response:
        fresh = self._conn is None
        conn = self._connect(timeout) if fresh else self._conn
        assert conn is not None
        try:
            if not fresh and conn.sock is not None:
                conn.sock.settimeout(timeout[1])
            conn.request(method, self._prefix + path, body=data, headers=self._headers | headers)
            answer = conn.getresponse()
            body = answer.read()
        except _STALE:
            self._drop()
            if fresh:
                raise
            return self._send(method, path, timeout, data, headers)  # the server closed it idle
        except BaseException:
            self._drop()
            raise
        if answer.will_close:
            self._drop()
        return Response(answer.status, body)

    def _connect(self, timeout: tuple[float, float]) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self._tls:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout[0],
                                               context=_tls_context(self.verify))
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout[0])
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(timeout[1])
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get_json(self, path: str, **kwargs: Any) -> Any:
        resp = self.request("GET", path, **kwargs)
        try:
            return resp.json()
        except ValueError as exc:
            raise OrthancHttpError(f"GET {self.base_url}{path}: the answer is not JSON",
                                   hint="is this URL an Orthanc server?") from exc

    # -- typed helpers -------------------------------------------------------
    def system(self) -> dict[str, Any]:
        data = self.get_json("/system")
        if not isinstance(data, dict) or "Version" not in data:
            raise OrthancHttpError(f"GET {self.base_url}/system: not an Orthanc answer",
                                   hint="is this URL an Orthanc server?")
        return data

    def statistics(self) -> dict[str, int]:
        """Return the counts of /statistics as integers (keys CountPatients, ...)."""
        data = self.get_json("/statistics")
        counts = {}
        for key in ("CountPatients", "CountStudies", "CountSeries", "CountInstances"):
            value = data.get(key) if isinstance(data, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise OrthancHttpError(f"GET {self.base_url}/statistics: bad {key} {value!r}",
                                       hint="is this URL an Orthanc server?")
            counts[key] = value
        return counts


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """Verify against the system's CAs (True), a CA bundle (a path), or not at all (False)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def http_error(method: str, url: str, resp: Response) -> OrthancHttpError:
    """Build the error for an unexpected status, with a hint for the usual ones."""
    status = resp.status_code
    detail = ""
    try:
        body = resp.json()
        if isinstance(body, dict):
            detail = str(body.get("Details") or body.get("Message") or "")[:200]
    except ValueError:
        pass
    hint = None
    if status == 401:
        hint = "wrong or missing credentials (password_env, password_file or ~/.netrc)"
    elif status == 403:
        hint = "the user is not allowed to do this"
    elif status == 404:
        hint = "no such resource on this server"
    transient = status >= 500 or status in (408, 429)
    msg = f"{method} {url}: HTTP {status}" + (f" ({detail})" if detail else "")
    return OrthancHttpError(msg, hint, status=status, transient=transient)
