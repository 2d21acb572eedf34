"""Find secrets in URLs and text, and hide them.

URL credentials are found by parsing the authority the way a person writes it, not
the way `urlsplit` does: the userinfo runs from `://` to the *last* `@`, so a password
holding `/`, `#`, `?`, `@`, `:` or `%` (escaped or not) is cut out whole instead of being
split into a "path" that is then printed. Every message of an `OrchestratorError` goes
through `redact_text`; `scrub` hides known secret values (a child's output, say).

A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

MASK = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# A URL inside a message runs to the next white space.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
MIN_SCRUBBED = 3  # shorter values would blank ordinary text; such passwords are refused upstream


@dataclass(frozen=True)
class Authority:
    """A URL cut at its userinfo: `scheme://[user[:password]@]hostport rest`."""

    scheme: str
    userinfo: str | None = field(repr=False)
    hostport: str
    rest: str  # path, query and fragment, as written

    @property
    def username(self) -> str | None:
        if self.userinfo is None:
            return None
        return unquote(self.userinfo.split(":", 1)[0])

    @property
    def password(self) -> str | None:
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return unquote(self.userinfo.split(":", 1)[1])


def parse_authority(url: str) -> Authority | None:
    """Cut `url` into scheme, userinfo, host[:port] and the rest; None without `scheme://`."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    after = url[m.end():]
    at = after.rfind("@")
    userinfo = after[:at] if at >= 0 else None
    tail = after[at + 1:] if at >= 0 else after
    end = len(tail)
    for sep in "/?#":
        i = tail.find(sep)
        if 0 <= i < end:
            end = i
    return Authority(m.group()[:-3], userinfo, tail[:end], tail[end:])


def redact_url(url: str) -> str:
    """The URL with its password (or a user-only token) replaced by ***; the rest as given."""
    parts = parse_authority(url)
    if parts is None or parts.userinfo is None:
        return url
    if parts.password is None:
        shown = MASK  # `token@host`: the lone user part may itself be the secret
    else:
        shown = f"{quote(parts.username or '', safe='')}:{MASK}"
    return f"{parts.scheme}://{shown}@{parts.hostport}{parts.rest}"


def redact_text(text: str) -> str:
    """Every URL in `text` with its credentials replaced by ***.

    A URL runs to the next white space, unless its `user:` part is followed, later on the
    same line, by an `@host`: then the password held a space, and all up to that `@` goes
    (hiding a little too much is the safe side).
    """
    if "://" not in text:
        return text
    out, pos = [], 0
    for m in _URL_IN_TEXT.finditer(text):
        if m.start() < pos:
            continue
        end = m.end()
        if "@" not in m.group() and ":" in m.group()[m.group().index("://") + 3:]:
            end = _spaced_userinfo_end(text, m.start(), end)
        out.append(text[pos:m.start()])
        out.append(redact_url(text[m.start():end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _spaced_userinfo_end(text: str, start: int, end: int) -> int:
    """Where a URL whose password holds white space ends (`end` when it does not)."""
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    nxt = _SCHEME.search(text, end, line_end)
    segment_end = nxt.start() if nxt else line_end
    at = text.rfind("@", end, segment_end)
    if at < 0 or at + 1 >= len(text) or text[at + 1].isspace():
        return end
    host = re.match(r"\S*", text[at + 1:segment_end])
    return at + 1 + (host.end() if host else 0)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (as is, or percent-escaped) replaced."""
    for s in sorted({s for s in secrets if s and len(s) >= MIN_SCRUBBED}, key=len, reverse=True):
        for form in {s, quote(s, safe=""), quote(s)}:
            text = text.replace(form, MASK)
    return text
