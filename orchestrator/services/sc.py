"""Pure parsers of `sc.exe` output (Windows Service Control Manager).

`sc queryex NAME` prints a block of `KEY : value` lines; `sc stop` / `sc start`
print the same block (without PID and FLAGS for stop) or, on failure, a line
`[SC] <Function> FAILED <code>:` followed by the system's message. Labels and
messages are localised, the layout and the numbers are not: the parsers read
the numeric STATE and the numeric error code, and find fields by position when
the English key names are absent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum


class ScState(IntEnum):
    """dwCurrentState of SERVICE_STATUS (winsvc.h)."""

    STOPPED = 1
    START_PENDING = 2
    STOP_PENDING = 3
    RUNNING = 4
    CONTINUE_PENDING = 5
    PAUSE_PENDING = 6
    PAUSED = 7


class ScError(IntEnum):
    """The Win32 error codes the service manager handles by number."""

    ACCESS_DENIED = 5
    SERVICE_REQUEST_TIMEOUT = 1053
    SERVICE_ALREADY_RUNNING = 1056
    SERVICE_DISABLED = 1058
    SERVICE_DOES_NOT_EXIST = 1060
    SERVICE_CANNOT_ACCEPT_CTRL = 1061
    SERVICE_NOT_ACTIVE = 1062
    SERVICE_LOGON_FAILED = 1069
    SERVICE_MARKED_FOR_DELETE = 1072


# Field order of `sc queryex` (SERVICE_STATUS_PROCESS); `sc query`/`sc stop` stop after WAIT_HINT.
FIELDS = ("TYPE", "STATE", "WIN32_EXIT_CODE", "SERVICE_EXIT_CODE", "CHECKPOINT", "WAIT_HINT",
          "PID", "FLAGS")

_FIELD = re.compile(r"^\s+(?P<key>[^:()]+?)\s*:\s*(?P<value>.*?)\s*$")
_FAILED = re.compile(r"^\[SC\].*?(?P<code>\d+)\s*:", re.MULTILINE)


@dataclass(frozen=True)
class ScQuery:
    """One status block of sc.exe output."""

    name: str | None
    state: ScState | None
    state_code: int
    win32_exit_code: int | None = None
    service_exit_code: int | None = None
    checkpoint: int | None = None
    wait_hint_ms: int | None = None
    pid: int | None = None

    def describe(self) -> str:
        label = self.state.name if self.state else f"state {self.state_code}"
        text = f"{label} ({self.state_code})"
        if self.win32_exit_code:
            text += f", WIN32_EXIT_CODE {self.win32_exit_code}"
        if self.service_exit_code:
            text += f", SERVICE_EXIT_CODE {self.service_exit_code}"
        if self.pid:
            text += f", PID {self.pid}"
        return text


def _number(value: str) -> int | None:
    """The first number of a value: `4  RUNNING` -> 4, `0x7d0` -> 2000, `1077  (0x435)` -> 1077."""
    m = re.match(r"\s*(0x[0-9a-fA-F]+|\d+)", value)
    if not m:
        return None
    return int(m.group(1), 16) if m.group(1).lower().startswith("0x") else int(m.group(1))


def parse_query(text: str) -> ScQuery | None:
    """Parse the status block of `sc queryex|query|stop|start NAME`; None when there is none.

    The name line (`SERVICE_NAME: X`, localised) starts at column 0; fields are
    indented `KEY : value` lines; the flags line under STATE is a parenthesised
    continuation and is skipped.
    """
    name = None
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            if fields:
                break  # a second block: only the first one counts
            key, sep, value = line.partition(":")
            if sep and not line.startswith("[SC]"):
                name = value.strip() or None
            continue
        if line.strip().startswith("("):
            continue
        m = _FIELD.match(line)
        if m:
            fields.append((m.group("key").strip().upper(), m.group("value")))
    if not fields:
        return None
    by_key = dict(fields)
    english = "STATE" in by_key

    def get(field: str) -> int | None:
        if english:
            return _number(by_key[field]) if field in by_key else None
        pos = FIELDS.index(field)
        return _number(fields[pos][1]) if pos < len(fields) else None

    code = get("STATE")
    if code is None:
        return None
    try:
        state = ScState(code)
    except ValueError:
        state = None
    return ScQuery(name, state, code, get("WIN32_EXIT_CODE"), get("SERVICE_EXIT_CODE"),
                   get("CHECKPOINT"), get("WAIT_HINT"), get("PID"))


def parse_error(text: str, returncode: int = 0) -> int | None:
    """The Win32 error code of a failed sc.exe call: `[SC] ... FAILED 1062:` -> 1062.

    Falls back to the exit code (sc.exe exits with the error code; some shells
    keep only its low byte, hence the output is read first). None on success.
    """
    m = _FAILED.search(text)
    if m:
        return int(m.group("code"))
    return returncode or None
