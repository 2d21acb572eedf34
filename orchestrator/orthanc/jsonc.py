"""Read JSON the way Orthanc reads its configuration (JsonCpp 1.9, default settings).

Orthanc 1.10 parses each configuration file with JsonCpp's `CharReaderBuilder`
defaults. They differ from strict JSON, and each difference decides whether
Orthanc starts (all checked against the real 1.10.1 binary, see docs/inspect.md):

- `//` and `/* */` comments between tokens; `/* /* */` is one comment (no nesting);
- one trailing comma before `}` or `]`; a repeated key: the last one wins;
- `012`, `1.` and a lone `-` are numbers; `NaN`, `Infinity` and `1e999` are not;
- raw control characters inside strings; a UTF-8 BOM at the start is skipped;
- text after the root value is ignored; nesting deeper than 1000 levels is refused;
- a comment is refused between a member name and its `:`, and right before the
  `]` of an array that is empty or ends with a comma (JsonCpp looks for that `]`
  skipping whitespace only).

Two deliberate differences, both refusals: bytes that are not UTF-8 inside a
string (JsonCpp passes them through unchanged) and a lone `\\uDC00`-`\\uDFFF`
escape (JsonCpp writes it out as invalid UTF-8). Bytes that are not UTF-8 are
expected as U+DC80..U+DCFF, i.e. text decoded with errors="surrogateescape".

Offsets are kept so that errors name a position and the top-level members can
be located, and rewritten, byte for byte.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

MAX_DEPTH = 1000  # JsonCpp's default stackLimit

_WS = re.compile(r"[ \t\r\n]*")
_EOL = re.compile(r"[\r\n]")
# Possessive quantifiers: an unterminated string fails in linear time.
_STRING = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"', re.S)
_NUMBER = re.compile(r"-?[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_HEX = frozenset("0123456789abcdefABCDEF")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
            "t": "\t"}
_LITERALS = (("true", True), ("false", False), ("null", None))


class JsonSyntaxError(ValueError):
    """The text is not JSON as Orthanc reads it; `offset` is where it goes wrong."""

    def __init__(self, message: str, offset: int, *, orthanc_accepts: bool = False):
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.orthanc_accepts = orthanc_accepts  # one of the two deliberate refusals


@dataclass(frozen=True)
class Member:
    """A top-level `"key": value` pair and where it sits in the text."""

    key: str
    key_offset: int
    value_start: int
    value_end: int
    is_string: bool  # the value is a string literal


@dataclass(frozen=True)
class Duplicate:
    """A key repeated in one object: the later one (at `offset`) wins."""

    path: tuple  # keys/indexes of the enclosing object, () for the root
    key: str
    first_offset: int
    offset: int


@dataclass
class Document:
    """A parsed text: the root value plus the positions the callers need."""

    value: object
    start: int = 0  # offset of the root value
    members: list[Member] = field(default_factory=list)  # in text order, repeats included
    duplicates: list[Duplicate] = field(default_factory=list)
    comments: list[tuple[int, int]] = field(default_factory=list)
    trailing: int | None = None  # offset of text after the root value (ignored by Orthanc)

    def in_comment(self, text: str, offset: int) -> bool:
        """True if `offset` of `text` lies in a comment (or at the end of a // comment)."""
        return any(start <= offset < end or (offset == end and text.startswith("//", start))
                   for start, end in self.comments)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """Return the 1-based line and column of `offset` (\\n, \\r\\n and \\r end a line)."""
    head = text[:max(offset, 0)]
    line = head.count("\n") + head.count("\r") - head.count("\r\n") + 1
    last = max(head.rfind("\n"), head.rfind("\r"))
    return line, offset - last


def parse(text: str, start: int = 0) -> Document:
    """Parse `text` from `start` as Orthanc would; raise JsonSyntaxError if Orthanc would refuse it."""
    return _Parser(text).run(start)


def _describe_byte(ch: str) -> str:
    return f"byte 0x{ord(ch) - 0xDC00:02X} is not UTF-8"


class _Frame:
    __slots__ = ("kind", "container", "path", "start", "key", "key_offset", "seen")

    def __init__(self, kind: str, path: tuple, start: int):
        self.kind = kind
        self.container: dict | list = {} if kind == "{" else []
        self.path = path
        self.start = start
        self.key = ""
        self.key_offset = start
        self.seen: dict[str, int] = {}

    def child_path(self) -> tuple:
        if self.kind == "{":
            return self.path + (self.key,)
        return self.path + (len(self.container),)


class _Parser:
    """An explicit-stack parser: a 1000-deep file cannot exhaust Python's recursion limit."""

    def __init__(self, text: str):
        self.text = text
        self.n = len(text)
        self.doc = Document(None)

    # -- whitespace and comments ------------------------------------------------
    def skip(self, p: int, record: bool = True) -> int:
        text = self.text
        while True:
            p = _WS.match(text, p).end()
            if not text.startswith("/", p):
                return p
            follower = text[p + 1:p + 2]
            if follower == "*":
                end = text.find("*/", p + 2)
                if end < 0:
                    raise JsonSyntaxError("unterminated /* comment", p)
                end += 2
            elif follower == "/":
                m = _EOL.search(text, p + 2)
                end = m.start() if m else self.n
            else:
                raise JsonSyntaxError("a lone '/' is not a comment (use // or /* */)", p)
            if record:
                self.doc.comments.append((p, end))
            p = end

    # -- scalars ------------------------------------------------------------------
    def string(self, p: int) -> tuple[str, int]:
        m = _STRING.match(self.text, p)
        if m is None:
            raise JsonSyntaxError("unterminated string", p)
        raw = m.group(1)
        bad = _NOT_UTF8.search(raw)
        if bad:
            raise JsonSyntaxError(_describe_byte(bad.group()), p + 1 + bad.start(),
                                  orthanc_accepts=True)
        return (_decode(raw, p + 1) if "\\" in raw else raw), m.end()

    def scalar(self, p: int, at_root: bool) -> tuple[object, int, bool]:
        text = self.text
        c = text[p:p + 1]
        if c == '"':
            value, end = self.string(p)
            return value, end, True
        if c == "-" or "0" <= c <= "9":
            m = _NUMBER.match(text, p)
            return _number(m.group(), p), m.end(), False
        for word, value in _LITERALS:
            if text.startswith(word, p):
                return value, p + len(word), False
        if not c:
            if at_root:
                raise JsonSyntaxError("no JSON object: the file is empty or holds only comments", p)
            raise JsonSyntaxError("unexpected end of file", p)
        if "\udc80" <= c <= "\udcff":
            raise JsonSyntaxError(_describe_byte(c), p)
        if c in "]}":
            raise JsonSyntaxError(f"expected a value before '{c}'", p)
        raise JsonSyntaxError(f"unexpected character {c!r}: expected a value "
                              "(object, array, string, number, true, false or null)", p)

    # -- containers -------------------------------------------------------------
    def enter(self, frame: _Frame, p: int) -> tuple[int, bool]:
        """Move past '{', '[' or ',' to the next value; return (position, container closed)."""
        text = self.text
        if frame.kind == "{":
            p = self.skip(p)
            c = text[p:p + 1]
            if c == "}":
                return p + 1, True
            if c != '"':
                if "\udc80" <= c <= "\udcff":
                    raise JsonSyntaxError(_describe_byte(c), p)
                raise JsonSyntaxError("expected a member name in double quotes, or '}'", p)
            frame.key, end = self.string(p)
            frame.key_offset = p
            q = _WS.match(text, end).end()
            if text.startswith(":", q):
                return q + 1, False
            if text.startswith("/", q):
                raise JsonSyntaxError(
                    f"comment between \"{frame.key}\" and its ':': Orthanc (JsonCpp) refuses this", q)
            raise JsonSyntaxError(f"expected ':' after \"{frame.key}\"", q)
        q = _WS.match(text, p).end()
        if text.startswith("]", q):
            return q + 1, True
        if text.startswith("/", q) and text.startswith("]", self.skip(q, record=False)):
            raise JsonSyntaxError("comment right before the ']' of an empty array or after its last "
                                  "',': Orthanc (JsonCpp) refuses this", q)
        return q, False

    def attach(self, frame: _Frame, value: object, start: int, end: int, is_string: bool,
               depth: int) -> None:
        if frame.kind == "[":
            frame.container.append(value)  # type: ignore[union-attr]
            return
        key = frame.key
        if key in frame.seen:
            self.doc.duplicates.append(Duplicate(frame.path, key, frame.seen[key], frame.key_offset))
        frame.container[key] = value  # type: ignore[index]
        frame.seen[key] = frame.key_offset
        if depth == 1:
            self.doc.members.append(Member(key, frame.key_offset, start, end, is_string))

    def run(self, p: int) -> Document:
        text, n = self.text, self.n
        stack: list[_Frame] = []
        while True:
            # A value is expected at p.
            p = self.skip(p)
            if not stack:
                self.doc.start = p
            c = text[p:p + 1]
            if c == "{" or c == "[":
                if len(stack) >= MAX_DEPTH:
                    raise JsonSyntaxError(f"nested deeper than {MAX_DEPTH} levels", p)
                frame = _Frame(c, stack[-1].child_path() if stack else (), p)
                stack.append(frame)
                p, closed = self.enter(frame, p + 1)
                if not closed:
                    continue
                stack.pop()
                value, start, is_string = frame.container, frame.start, False
            else:
                start = p
                value, p, is_string = self.scalar(p, at_root=not stack)
            # A value is complete: attach it, then close every container it completes.
            while True:
                if not stack:
                    return self.finish(value, p)
                frame = stack[-1]
                self.attach(frame, value, start, p, is_string, len(stack))
                p = self.skip(p)
                c = text[p:p + 1]
                closer = "}" if frame.kind == "{" else "]"
                if c == ",":
                    p, closed = self.enter(frame, p + 1)
                    if not closed:
                        break
                elif c == closer:
                    p += 1
                elif not c:
                    raise JsonSyntaxError(f"unexpected end of file: missing '{closer}'", n)
                else:
                    raise JsonSyntaxError(f"expected ',' or '{closer}'", p)
                stack.pop()
                value, start, is_string = frame.container, frame.start, False

    def finish(self, value: object, p: int) -> Document:
        self.doc.value = value
        try:
            q = self.skip(p)
        except JsonSyntaxError:
            q = p  # an unterminated comment after the root is ignored too
            q = _WS.match(self.text, q).end()
        if q < self.n:
            self.doc.trailing = q
        return self.doc


def _number(token: str, offset: int) -> int | float:
    digits = token[1:] if token.startswith("-") else token
    if digits.isdigit() or not digits:
        # JsonCpp: an integer that fits 64 bits is an integer, a lone '-' is 0,
        # anything larger is read as a double.
        number = int(token) if digits else 0
        if -(2 ** 63) <= number <= 2 ** 64 - 1:
            return number
    try:
        real = float(token)
    except ValueError:
        raise JsonSyntaxError(f"'{token}' is not a number", offset) from None
    if math.isinf(real) or math.isnan(real):
        raise JsonSyntaxError(f"'{token}' is not a number (out of range)", offset)
    return real


def _hex4(raw: str, k: int, base: int) -> int:
    digits = raw[k:k + 4]
    if len(digits) < 4 or not all(ch in _HEX for ch in digits):
        raise JsonSyntaxError("\\u must be followed by four hexadecimal digits", base + k - 2)
    return int(digits, 16)


def _decode(raw: str, base: int) -> str:
    """Decode the escapes of a string literal's content; `base` is its offset in the text."""
    out: list[str] = []
    i = 0
    while True:
        j = raw.find("\\", i)
        if j < 0:
            out.append(raw[i:])
            return "".join(out)
        out.append(raw[i:j])
        c = raw[j + 1]  # the string pattern guarantees a character after a backslash
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
            i = j + 2
            continue
        if c != "u":
            raise JsonSyntaxError(f"bad escape sequence \\{c} in string", base + j)
        code = _hex4(raw, j + 2, base)
        i = j + 6
        if 0xD800 <= code <= 0xDBFF:
            # JsonCpp combines with the next \u escape without checking it is a low surrogate.
            if raw[i:i + 2] != "\\u":
                raise JsonSyntaxError("\\uD800-\\uDBFF must be followed by a second \\u escape "
                                      "(surrogate pair)", base + j)
            low = _hex4(raw, i + 2, base)
            code = 0x10000 + ((code & 0x3FF) << 10) + (low & 0x3FF)
            i += 6
        elif 0xDC00 <= code <= 0xDFFF:
            raise JsonSyntaxError(f"\\u{code:04X} is half of a surrogate pair on its own", base + j,
                                  orthanc_accepts=True)
        out.append(chr(code))
