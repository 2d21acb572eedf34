"""Pure parsers over the text apt and dpkg print; no process is run here.

Each function takes captured output (tests feed real captures from
`tests/data/apt/`) and returns data. The adapter in `host/packages.py` runs the
commands and hands their output here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

# `dpkg-query -W -f` format the adapter uses: one line per package.
DPKG_QUERY_FORMAT = "${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"


class DpkgStatus(Enum):
    """The second letter of dpkg's status abbreviation: how far a package got."""

    NOT_INSTALLED = "n"
    CONFIG_FILES = "c"
    HALF_INSTALLED = "H"
    UNPACKED = "U"
    HALF_CONFIGURED = "F"
    TRIGGERS_AWAITED = "W"
    TRIGGERS_PENDING = "t"
    INSTALLED = "i"


SETTLED = {DpkgStatus.NOT_INSTALLED, DpkgStatus.CONFIG_FILES, DpkgStatus.INSTALLED}


@dataclass(frozen=True)
class PackageState:
    """One package as dpkg records it."""

    name: str
    abbrev: str  # e.g. "ii", "iF", "iU" (want + status, error flag dropped when blank)
    status: DpkgStatus
    version: str  # "" when dpkg has no version for it
    reinstall_required: bool = False  # dpkg's error flag "R"

    @property
    def installed(self) -> bool:
        return self.status is DpkgStatus.INSTALLED and not self.reinstall_required

    @property
    def settled(self) -> bool:
        """True unless dpkg was interrupted on this package (it needs `dpkg --configure -a`)."""
        return self.status in SETTLED and not self.reinstall_required


def parse_dpkg_query(text: str) -> dict[str, PackageState]:
    """Parse `dpkg-query -W -f DPKG_QUERY_FORMAT` output into states keyed by package name."""
    states: dict[str, PackageState] = {}
    for line in text.splitlines():
        if "\t" not in line:  # blank, or dpkg-query's "no packages found matching" note
            continue
        name, abbrev, version = (line.split("\t") + ["", ""])[:3]
        abbrev = abbrev.rstrip()
        if len(abbrev) < 2:
            raise ValueError(f"dpkg-query line without a status: {line!r}")
        name = name.split(":")[0]  # multiarch names carry ":amd64"
        states[name] = PackageState(name=name, abbrev=abbrev[:2], status=DpkgStatus(abbrev[1]),
                                    version=version.strip(),
                                    reinstall_required=abbrev[2:3] == "R")
    return states


@dataclass(frozen=True)
class VersionEntry:
    """One row of apt's version table: a version, its priority and where it comes from."""

    version: str
    priority: int  # the highest pin priority among its sources
    releases: tuple[str, ...]  # e.g. ("trixie",); "" entries dropped; "now" for dpkg's status
    installed: bool


@dataclass(frozen=True)
class Policy:
    """`apt-cache policy PKG` for one package."""

    name: str
    installed: str | None
    candidate: str | None
    versions: tuple[VersionEntry, ...]  # newest first, as apt prints them

    def known(self) -> list[str]:
        return [v.version for v in self.versions]

    def in_release(self, release: str) -> list[str]:
        """The versions a release offers, newest first."""
        return [v.version for v in self.versions if release in v.releases]

    def candidate_for(self, release: str | None) -> str | None:
        """What `apt-get install -t RELEASE PKG` would pick: the release's newest version."""
        if release is None:
            return self.candidate
        found = self.in_release(release)
        return found[0] if found else None


_SOURCE = re.compile(r"^\s+(-?\d+)\s+(\S+)(?:\s+(\S+))?")


def parse_apt_cache_policy(text: str) -> Policy:
    """Parse `apt-cache policy PKG` (one package, C locale)."""
    name, installed, candidate = "", None, None
    versions: list[VersionEntry] = []
    current: dict | None = None
    in_table = False
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" ") and line.rstrip().endswith(":"):
            name = line.strip()[:-1]
            continue
        stripped = line.strip()
        if stripped.startswith("Installed:"):
            installed = _none(stripped.split(":", 1)[1])
        elif stripped.startswith("Candidate:"):
            candidate = _none(stripped.split(":", 1)[1])
        elif stripped.startswith("Version table:"):
            in_table = True
        elif in_table and (stripped.startswith("***") or _is_version_line(line)):
            if current:
                versions.append(_entry(current))
            mark = stripped.startswith("***")
            parts = stripped.lstrip("* ").split()
            current = {"version": parts[0], "priority": int(parts[1]) if len(parts) > 1 else 0,
                       "releases": [], "installed": mark}
        elif in_table and current is not None:
            m = _SOURCE.match(line)
            if m:
                where = m.group(3) or m.group(2)
                if m.group(2) == "/var/lib/dpkg/status" or where == "/var/lib/dpkg/status":
                    current["releases"].append("now")
                else:
                    current["releases"].append(where.split("/")[0])
    if current:
        versions.append(_entry(current))
    if not name:
        raise ValueError("apt-cache policy printed no package")
    return Policy(name=name, installed=installed, candidate=candidate, versions=tuple(versions))


def _is_version_line(line: str) -> bool:
    # Version rows are indented 5 spaces (8 for their sources) and hold "VERSION PRIORITY".
    indent = len(line) - len(line.lstrip(" "))
    return indent <= 5 and len(line.split()) == 2


def _entry(d: dict) -> VersionEntry:
    return VersionEntry(version=d["version"], priority=d["priority"],
                        releases=tuple(r for r in d["releases"] if r), installed=d["installed"])


def _none(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", "(none)") else value


def parse_madison(text: str) -> list[tuple[str, str]]:
    """Parse `apt-cache madison PKG`: (version, release) pairs, newest first."""
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 3 and cells[1]:
            where = cells[2].split()
            release = where[1].split("/")[0] if len(where) > 1 else ""
            out.append((cells[1], release))
    return out


class AptFailure(Enum):
    """Why apt or dpkg failed, read from their messages (C locale)."""

    LOCKED = "apt lock held"
    UNKNOWN_VERSION = "unknown version"
    NO_NETWORK = "no network"
    DISK_FULL = "disk full"
    INTERRUPTED = "dpkg interrupted"
    BROKEN = "unmet dependencies"
    OTHER = "other"


_FAILURES: tuple[tuple[AptFailure, re.Pattern], ...] = (
    (AptFailure.LOCKED, re.compile(r"Could not get lock|Unable to acquire the dpkg frontend lock"
                                   r"|Unable to lock the administration directory"
                                   r"|was locked by another process")),  # dpkg's own
    (AptFailure.UNKNOWN_VERSION, re.compile(r"Version '[^']*' for '[^']*' was not found"
                                            r"|Release '[^']*' for '[^']*' was not found"
                                            r"|Unable to locate package")),
    (AptFailure.DISK_FULL, re.compile(r"You don't have enough free space|No space left on device")),
    (AptFailure.NO_NETWORK, re.compile(r"Temporary failure resolving|Could not resolve"
                                       r"|Failed to fetch|Unable to fetch some archives"
                                       r"|Could not connect to|Network is unreachable")),
    (AptFailure.INTERRUPTED, re.compile(r"dpkg was interrupted|Sub-process /usr/bin/dpkg returned"
                                        r"|error processing package")),
    (AptFailure.BROKEN, re.compile(r"Unmet dependencies|held broken packages")),
)


def classify_apt_failure(text: str) -> AptFailure:
    """The first known cause found in apt's output (order matters: a full disk also fails a fetch)."""
    for failure, pattern in _FAILURES:
        if pattern.search(text):
            return failure
    return AptFailure.OTHER


_LOCK_HOLDER = re.compile(r"held by process (\d+) \(([^)]*)\)")
_DPKG_LOCK_HOLDER = re.compile(r"was locked by another process with pid (\d+)")


def lock_holder(text: str) -> tuple[int, str] | None:
    """(pid, program) of the process apt (or dpkg: program "") says holds its lock."""
    m = _LOCK_HOLDER.search(text)
    if m:
        return int(m.group(1)), m.group(2)
    m = _DPKG_LOCK_HOLDER.search(text)
    return (int(m.group(1)), "") if m else None


_NOT_FOUND = re.compile(r"Version '([^']*)' for '([^']*)' was not found")


def missing_version(text: str) -> tuple[str, str] | None:
    """(package, version) apt says it does not know."""
    m = _NOT_FOUND.search(text)
    return (m.group(2), m.group(1)) if m else None


def deb_filename(name: str, version: str, arch: str) -> str:
    """The file name apt gives a package in its cache (an epoch's ':' is stored as '%3a')."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


class Move(Enum):
    """What a simulated apt run (`apt-get -s`) would do to one package."""

    NEW = "new"  # installed where there was none
    REPLACE = "replace"  # another version over the installed one (up or down)
    REMOVE = "remove"


@dataclass(frozen=True)
class PlannedMove:
    """One package apt would touch, with the version it has now (old) and would have (new)."""

    move: Move
    name: str
    old: str  # "" for NEW
    new: str  # "" for REMOVE


_SIM = re.compile(r"^(Inst|Remv) (\S+)(?: \[([^\]]*)\])?(?: \((\S+))?")


def parse_apt_simulation(text: str) -> list[PlannedMove]:
    """Parse the Inst/Remv lines of `apt-get -s install ...` (Conf lines add nothing)."""
    moves = []
    for line in text.splitlines():
        m = _SIM.match(line)
        if not m:
            continue
        verb, name, old, new = m.group(1), m.group(2).split(":")[0], m.group(3) or "", m.group(4) or ""
        if verb == "Remv":
            moves.append(PlannedMove(Move.REMOVE, name, old, ""))
        else:
            moves.append(PlannedMove(Move.REPLACE if old else Move.NEW, name, old, new))
    return moves
