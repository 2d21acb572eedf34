"""HTTP credentials for Orthanc: from an environment variable, a file, netrc or the URL.

A password never appears in a URL we print, an argv we run, a log line or the
journal: `redact_url` (orchestrator.secrets) is applied to every URL before it is shown,
and every error message is redacted again on its way out.
"""

from __future__ import annotations

import netrc
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import InputError
from orchestrator.secrets import parse_authority, redact_url

__all__ = ["Credentials", "split_url", "redact_url", "read_password_file", "resolve"]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    def as_auth(self) -> tuple[str, str]:
        return (self.username, self.password)


def split_url(url: str) -> tuple[str, Credentials | None]:
    """Return the URL without user:pass@ and the credentials it carried, if any.

    The userinfo runs to the last `@`, so a password holding `/ # ? @ :` (escaped or
    not) is taken whole; no part of it reaches the returned URL or an error message.
    """
    shown = redact_url(url)
    parts = parse_authority(url.strip())
    if parts is None or parts.scheme.lower() not in ("http", "https"):
        raise InputError(f"bad URL {shown}: expected http:// or https:// and a host",
                         hint="e.g. http://127.0.0.1:8042")
    host, port = _host_port(parts.hostport, shown)
    creds = None
    if parts.userinfo is not None:
        creds = Credentials(parts.username or "", parts.password or "")
    path = parts.rest
    for sep in "?#":
        path = path.split(sep, 1)[0]
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{path.rstrip('/')}", creds


def _host_port(hostport: str, shown: str) -> tuple[str, int | None]:
    """Check `host[:port]` (an IPv6 literal in brackets); never echo it unredacted."""
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%-]+)(?::(\d{1,5}))?", hostport)
    if m is None:
        raise InputError(f"bad URL {shown}: expected http(s)://host[:port]",
                         hint="e.g. http://127.0.0.1:8042; escape a password's reserved "
                              "characters as %XX, or use password_env")
    port = int(m.group(2)) if m.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise InputError(f"bad URL {shown}: port {port} is out of range",
                         hint="e.g. http://127.0.0.1:8042")
    return m.group(1).lower(), port


def read_password_file(path: str | Path) -> str:
    """Read a password file, refusing one that others can read (mode must be 0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise InputError(f"cannot read password file {p}: {exc.strerror}",
                         hint="create it with mode 0600, holding the password alone") from exc
    posix = os.name == "posix" and sys.platform != "win32"  # Windows: ACLs, not mode bits
    if posix and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"password file {p} is readable by others (mode {stat.S_IMODE(st.st_mode):o})",
                         hint=f"chmod 600 {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read password file {p}: {exc}",
                         hint="it must hold the password as UTF-8 text") from exc
    return text.rstrip("\r\n")


def resolve(url: str, *, username: str | None = None, password_env: str | None = None,
            password_file: str | Path | None = None, use_netrc: bool = True,
            environ: dict[str, str] | None = None) -> tuple[str, Credentials | None]:
    """Return (URL without credentials, credentials) from the sources, most explicit first.

    Order: password_env / password_file (with `username`), then user:pass@ in the
    URL, then ~/.netrc (or $NETRC) for the URL's host.
    """
    env = os.environ if environ is None else environ
    clean, from_url = split_url(url)
    if password_env or password_file:
        if password_env:
            if password_env not in env:
                raise InputError(f"environment variable {password_env} is not set",
                                 hint=f"export {password_env}=... before running")
            password = env[password_env]
        else:
            password = read_password_file(password_file)  # type: ignore[arg-type]
        user = username or (from_url.username if from_url else None)
        if not user:
            raise InputError("a password was given without a username",
                             hint="set the username too")
        return clean, Credentials(user, password)
    if from_url is not None:
        return clean, from_url
    if username and not use_netrc:
        raise InputError(f"no password for user {username}",
                         hint="give password_env, password_file, or a ~/.netrc entry")
    if use_netrc:
        creds = _from_netrc(urlsplit(clean).hostname or "", env)
        if creds is not None and (username is None or creds.username == username):
            return clean, creds
    return clean, None


def _from_netrc(host: str, env) -> Credentials | None:
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.isfile(path):
        return None
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        raise InputError(f"cannot read {path}: {exc}", hint="fix the netrc file's syntax") from exc
    if not entry:
        return None
    login, _, password = entry
    return Credentials(login or "", password or "")
