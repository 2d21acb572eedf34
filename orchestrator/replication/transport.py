"""A lean, thread-safe HTTP pool to one Orthanc, for bulk transfers.

`requests` costs ~0.9 CPU-ms per 130 KB POST on the client, urllib3 alone
~0.4 (bench/replicate.py measures it): on a host that also runs Orthanc,
client CPU is throughput lost, so the transfer path talks to urllib3 directly.
Answers of every status come back as data; only connection trouble raises.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import urllib3

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials


@dataclass(frozen=True)
class Answer:
    status: int
    data: bytes = field(repr=False)
    content_type: str = ""


class Endpoint:
    """One Orthanc at `base_url` (no credentials inside it) over keep-alive connections."""

    def __init__(self, base_url: str, credentials: Credentials | None = None, *,
                 verify: bool = True, ca_bundle: str | None = None,
                 timeout: tuple[float, float] = (5.0, 120.0), pool_size: int = 8):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.prefix = parts.path.rstrip("/")
        kwargs: dict = {}
        if parts.scheme == "https":
            if verify:
                kwargs["cert_reqs"] = "CERT_REQUIRED"
                if ca_bundle:
                    kwargs["ca_certs"] = ca_bundle
            else:
                kwargs["cert_reqs"] = "CERT_NONE"
                kwargs["assert_hostname"] = False
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.pool = urllib3.connection_from_url(
            f"{parts.scheme}://{parts.netloc}", maxsize=pool_size, block=True,
            timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]), retries=False,
            **kwargs)
        self.headers = {"Accept-Encoding": "identity"}  # gzip costs the source ~10 CPU-ms each
        if credentials is not None:
            token = f"{credentials.username}:{credentials.password}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode("ascii")

    def close(self) -> None:
        self.pool.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> Answer:
        """Send one request and return the answer, whatever its status.

        Raises OrthancHttpError (transient) when no answer came: refused,
        reset, timed out. TLS failures are not transient.
        """
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        url = f"{self.base_url}{path}"
        try:
            resp = self.pool.urlopen(method, self.prefix + path, body=body, headers=headers,
                                     redirect=False, preload_content=True)
        except urllib3.exceptions.SSLError as exc:
            raise OrthancHttpError(f"{method} {url}: TLS verification failed",
                                   hint="give the CA with --ca-bundle (or --insecure, knowingly)"
                                   ) from exc
        except urllib3.exceptions.ConnectTimeoutError as exc:
            raise OrthancHttpError(f"{method} {url}: cannot connect (timed out)",
                                   hint="is Orthanc running, and is the URL right?",
                                   transient=True) from exc
        except urllib3.exceptions.TimeoutError as exc:
            raise OrthancHttpError(f"{method} {url}: no answer in time",
                                   hint="Orthanc is overloaded or hung", transient=True) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise OrthancHttpError(f"{method} {url}: cannot connect ({_reason(exc)})",
                                   hint="is Orthanc running, and is the URL right?",
                                   transient=True) from exc
        return Answer(resp.status, resp.data or b"", resp.headers.get("Content-Type", ""))

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: bytes, content_type: str = "application/dicom") -> Answer:
        return self.request("POST", path, body, content_type)


def _reason(exc: BaseException) -> str:
    """A short cause without URLs (urllib3 puts the URL in its messages)."""
    inner = getattr(exc, "reason", None) or exc
    name = type(inner).__name__
    text = str(inner)
    for marker in ("Connection refused", "Connection reset", "Remote end closed",
                   "Name or service not known", "No route to host", "timed out"):
        if marker.lower() in text.lower():
            return marker.lower()
    return name
