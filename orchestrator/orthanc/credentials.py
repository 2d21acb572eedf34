"""HTTP credentials for Orthanc: from an environment variable, a file, netrc or the URL.

A password never appears in a URL we print, an argv we run, a log line or the
journal: `redact_url` is applied to every URL before it is shown.
"""

from __future__ import annotations

import netrc
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from orchestrator.errors import InputError


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    def as_auth(self) -> tuple[str, str]:
        return (self.username, self.password)


def split_url(url: str) -> tuple[str, Credentials | None]:
    """Return the URL without user:pass@ and the credentials it carried, if any."""
    try:
        parts = urlsplit(url)
        port = parts.port  # validates the port
    except ValueError as exc:
        raise InputError(f"bad URL {redact_url(url)}: {exc}",
                         hint="use http(s)://host:port, e.g. http://127.0.0.1:8042") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"bad URL {redact_url(url)}: expected http:// or https:// and a host",
                         hint="e.g. http://127.0.0.1:8042")
    creds = None
    if parts.username is not None:
        creds = Credentials(unquote(parts.username), unquote(parts.password or ""))
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    clean = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return clean, creds


def redact_url(url: str) -> str:
    """Replace the password of a URL with *** (and keep it printable)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
    except ValueError:
        # Unparseable: cut whatever stands between :// and the last @.
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return url


def read_password_file(path: str | Path) -> str:
    """Read a password file, refusing one that others can read (mode must be 0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise InputError(f"cannot read password file {p}: {exc.strerror}",
                         hint="create it with mode 0600, holding the password alone") from exc
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
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
