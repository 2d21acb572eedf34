"""A small Orthanc REST client for the upgrade steps: keep-alive session, timeouts,
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

from typing import Any

import requests

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials

DEFAULT_TIMEOUT = (5.0, 120.0)  # (connect, read) seconds


class OrthancClient:
    """Talk to one Orthanc at `base_url` (no credentials inside the URL)."""

    def __init__(self, base_url: str, credentials: Credentials | None = None, *,
                 verify: bool | str = True, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 pool_size: int = 10):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = verify
        self.session.trust_env = False  # no proxies: a proxy would see our credentials
        if credentials is not None:
            self.session.auth = credentials.as_auth()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw -----------------------------------------------------------------
    def request(self, method: str, path: str, *, expect: tuple[int, ...] = (200,),
                timeout: tuple[float, float] | None = None, **kwargs: Any) -> requests.Response:
        """Send one request; raise OrthancHttpError unless the status is in `expect`."""
        url = f"{self.base_url}{path}"
        try:
            resp = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise OrthancHttpError(f"{method} {url}: TLS verification failed",
                                   hint="give the CA with --ca-bundle (or --insecure, knowingly)") from exc
        except requests.exceptions.ConnectionError as exc:
            raise OrthancHttpError(f"{method} {url}: cannot connect",
                                   hint="is Orthanc running, and is the URL right?",
                                   transient=True) from exc
        except requests.exceptions.Timeout as exc:
            raise OrthancHttpError(f"{method} {url}: no answer in time",
                                   hint="Orthanc is overloaded or hung", transient=True) from exc
        except requests.exceptions.RequestException as exc:
            raise OrthancHttpError(f"{method} {url}: {type(exc).__name__}", transient=True) from exc
        if resp.status_code not in expect:
            raise http_error(method, url, resp)
        return resp

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


def http_error(method: str, url: str, resp: requests.Response) -> OrthancHttpError:
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
