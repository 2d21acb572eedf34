"""The Orthanc binary: its version from `--version`, and the index schema it expects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import CommandError, InputError
from orchestrator.host.runner import Runner

MAINLINE = (999, 0, 0)  # an unreleased build: newer than any release
# Schema (DatabaseVersion) per release, from the Orthanc book: (first release, schema).
SCHEMA_TABLE = (((0, 0, 0), 2), ((0, 4, 0), 3), ((0, 7, 3), 4), ((0, 8, 5), 5), ((0, 9, 5), 6))
TABLE_KNOWN_UP_TO = (1, 13)  # releases after 1.13.x are assumed to keep schema 6

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class OrthancVersion:
    """A release number; ordered by (major, minor, patch)."""

    major: int
    minor: int
    patch: int
    raw: str = field(default="", compare=False)

    @property
    def is_mainline(self) -> bool:
        return self.raw == "mainline"

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        return (self.major, self.minor, self.patch) >= (major, minor, patch)

    def __str__(self) -> str:
        return "mainline" if self.is_mainline else f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> OrthancVersion:
    """Parse "1.10.1", "1.12" or "mainline"; raise ValueError otherwise."""
    text = text.strip()
    if text == "mainline":
        return OrthancVersion(*MAINLINE, raw="mainline")
    m = _VERSION.match(text)
    if not m:
        raise ValueError(f"not an Orthanc version: {text!r}")
    return OrthancVersion(int(m[1]), int(m[2]), int(m[3] or 0), raw=text)


ORTHANC_MARKS = ("Jodogne", "Orthanc Team")


def parse_version_output(text: str) -> OrthancVersion:
    """Read the version from `Orthanc --version` output.

    Its first line is the program path as invoked, a space and the version
    ("/usr/sbin/Orthanc 1.10.1", "C:\\Program Files\\...\\Orthanc.exe mainline"):
    the path may hold spaces, so the version is the last word.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Every Orthanc build (0.x to 1.13, Linux and Windows) prints its copyright lines with the
    # author's name; GNU `true` or `sleep` print a version too ("9.1"), and must not pass.
    if lines and not any(mark in text for mark in ORTHANC_MARKS):
        raise InputError(f"`--version` output is not Orthanc's: {lines[0][:80]!r}",
                         hint="service.binary must be the Orthanc server binary (e.g. /usr/sbin/Orthanc)")
    if lines:
        try:
            return parse_version(lines[0].rsplit(None, 1)[-1])
        except ValueError:
            pass
    first = lines[0][:80] if lines else "(no output)"
    raise InputError(f"cannot read an Orthanc version from `--version` output: {first!r}",
                     hint="is this the Orthanc server binary?")


def binary_version(binary: str | Path, runner: Runner, *, timeout: float = 10) -> OrthancVersion:
    """Run `BINARY --version` and parse it; CommandError if it cannot run, InputError if unreadable."""
    done = runner.run([str(binary), "--version"], timeout=timeout, check=False)
    if done.returncode != 0:
        raise CommandError(f"{binary} --version exited with {done.returncode}: {done.tail(2)}",
                           hint="is this the Orthanc server binary, and can it start here?",
                           completed=done)
    return parse_version_output(done.stdout or done.stderr)


def expected_schema(version: OrthancVersion) -> int:
    """Return the DatabaseVersion this Orthanc expects (versions before 0.4.0 give 2: "2 or older")."""
    schema = SCHEMA_TABLE[0][1]
    for first, number in SCHEMA_TABLE:
        if (version.major, version.minor, version.patch) >= first:
            schema = number
    return schema


def schema_is_known(version: OrthancVersion) -> bool:
    """False for mainline and releases after the table: their schema 6 is an assumption."""
    return not version.is_mainline and (version.major, version.minor) <= TABLE_KNOWN_UP_TO
