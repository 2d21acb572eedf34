"""Classify an `Orthanc --upgrade` run from how it ended, its exit code and its log.

Pure: the watchdog's verdict, the exit code and the log lines in, a verdict
out. Lines are matched on their message text, never on the `file.cpp:line`
part, which differs between builds (ORTHANC.md lists the messages). Exit codes:
0 on success or nothing to do; 255 for any error on Linux; Orthanc's own
error code on Windows (18 = incompatible database version).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

# "W1127 17:53:29.297215 main.cpp:1402] message" (1.12 adds a thread name before the file).
_PREFIX = re.compile(r"^[EWIT]\d{4} \d\d:\d\d:\d\d\.\d+ (?:.*?\] )")
_CURRENT = re.compile(r"Current database version: (\d+)")
_EXPECTED = re.compile(r"Database version expected by Orthanc: (\d+)")
_STEP = re.compile(r"Upgrading database version from (\d+) to (\d+)")


class UpgradeOutcome(str, Enum):
    """What an `--upgrade` run did (closed set)."""

    UPGRADED = "upgraded"
    NOTHING_TO_DO = "nothing-to-do"
    HUNG = "hung"  # the stall watchdog ended it
    TIMED_OUT = "timed-out"
    INTERRUPTED = "interrupted"
    SCHEMA_TOO_NEW = "schema-too-new"
    UPGRADE_FAILED = "upgrade-failed"  # "Unable to run the automated upgrade"
    INDEX_LOCKED = "index-locked"  # the service (or another Orthanc) still holds the index
    BAD_CONFIG = "bad-config"
    KILLED = "killed"  # ended by a signal the tool did not send
    FAILED = "failed"  # any other error
    NOT_RUN = "not-run"  # dry run

    @property
    def ok(self) -> bool:
        return self in (UpgradeOutcome.UPGRADED, UpgradeOutcome.NOTHING_TO_DO, UpgradeOutcome.NOT_RUN)


@dataclass(frozen=True)
class Verdict:
    outcome: UpgradeOutcome
    message: str
    hint: str | None = None
    schema_before: int | None = None  # "Current database version"
    schema_expected: int | None = None  # "Database version expected by Orthanc"
    last_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def to_dict(self) -> dict:
        return {"outcome": self.outcome.value, "message": self.message, "hint": self.hint,
                "schema_before": self.schema_before, "schema_expected": self.schema_expected,
                "last_message": self.last_message}


def message_of(line: str) -> str:
    """The message text of an Orthanc log line (the level, time and source file stripped)."""
    return _PREFIX.sub("", line.rstrip(), count=1)


def classify(ended: str, returncode: int | None, lines: Sequence[str], *,
             quiet: float = 0.0, elapsed: float = 0.0) -> Verdict:
    """Return the verdict for a run that ended as `ended` ("exited", "stall", "timeout",
    "interrupted", "not-run") with `returncode` and these log lines."""
    messages = [message_of(line) for line in lines if line.strip()]
    before = _last_int(_CURRENT, messages)
    expected = _last_int(_EXPECTED, messages)
    last = messages[-1] if messages else None
    facts = {"schema_before": before, "schema_expected": expected, "last_message": last}

    if ended == "not-run":
        return Verdict(UpgradeOutcome.NOT_RUN, "not run (dry run)", **facts)
    if ended == "stall":
        step = _last_match(_STEP, messages)
        known = step is not None and step.group(1) in ("3", "4", "5")
        return Verdict(
            UpgradeOutcome.HUNG,
            f"--upgrade stalled: no log line, no CPU and no I/O for {quiet:.0f}s"
            + (f" after \"{last}\"" if last else "") + "; it was stopped",
            "this is the known deadlock of Orthanc 1.9.2 to 1.12.7 on a SQLite upgrade from "
            "schema 3-5: use Orthanc >= 1.12.8, or replicate into a fresh database"
            if known else "raise the upgrade's `stall` if the archive is large and storage slow",
            **facts)
    if ended == "timeout":
        return Verdict(UpgradeOutcome.TIMED_OUT,
                       f"--upgrade still running after {elapsed:.0f}s (the time limit); it was stopped"
                       + (f"; last line: \"{last}\"" if last else ""),
                       "raise the upgrade's `timeout`: 5 -> 6 re-reads every file", **facts)
    if ended == "interrupted":
        return Verdict(UpgradeOutcome.INTERRUPTED, "--upgrade was interrupted and stopped", **facts)

    text = "\n".join(messages)
    if returncode == 0:
        if "The database schema was successfully upgraded" in text:
            return Verdict(UpgradeOutcome.UPGRADED, _upgraded(before, expected), **facts)
        if "No upgrade is needed" in text:
            return Verdict(UpgradeOutcome.NOTHING_TO_DO,
                           f"nothing to do: the index is already at schema {before or expected or '?'}",
                           **facts)
        return Verdict(UpgradeOutcome.FAILED,
                       "--upgrade exited with 0 but logged neither success nor \"No upgrade is needed\"",
                       "read its log: was this the Orthanc server binary?", **facts)
    if returncode is not None and returncode < 0:
        return Verdict(UpgradeOutcome.KILLED, f"--upgrade was killed by signal {-returncode}",
                       "something else on the host stopped it (OOM killer?)", **facts)
    error = _first_error(lines) or last or "(no log)"
    rc = f"exit {returncode}"
    if "is too recent for this version of Orthanc" in text:
        return Verdict(UpgradeOutcome.SCHEMA_TOO_NEW,
                       f"the index is newer than this Orthanc ({rc}): {error}",
                       "use a newer Orthanc binary; never downgrade an index", **facts)
    if "database is locked" in text:
        return Verdict(UpgradeOutcome.INDEX_LOCKED,
                       f"the index is locked by another process ({rc})",
                       "the service (or another Orthanc on this index) still runs: stop it", **facts)
    if "Cannot parse JSON" in text or "Cannot parse a JSON document" in text:
        return Verdict(UpgradeOutcome.BAD_CONFIG, f"Orthanc cannot read its configuration ({rc}): {error}",
                       "fix the configuration's JSON", **facts)
    if "Unable to run the automated upgrade" in text:
        return Verdict(UpgradeOutcome.UPGRADE_FAILED, f"the automated upgrade failed ({rc}): {error}",
                       "only replication can move this data: `orchestrator replicate` from an "
                       "Orthanc that can read it into a fresh one", **facts)
    return Verdict(UpgradeOutcome.FAILED, f"--upgrade failed ({rc}): {error}",
                   "read the upgrade log", **facts)


def _upgraded(before: int | None, expected: int | None) -> str:
    if before is not None and expected is not None:
        return f"upgraded the index from schema {before} to {expected}"
    return "upgraded the index"


def _last_int(pattern: re.Pattern[str], messages: Sequence[str]) -> int | None:
    m = _last_match(pattern, messages)
    return int(m.group(1)) if m else None


def _last_match(pattern: re.Pattern[str], messages: Sequence[str]) -> re.Match[str] | None:
    for msg in reversed(messages):
        m = pattern.search(msg)
        if m:
            return m
    return None


def _first_error(lines: Sequence[str]) -> str | None:
    """The first error line's message, skipping the generic 'Uncaught exception' one."""
    for line in lines:
        if line.startswith("E"):
            msg = message_of(line)
            if not msg.startswith("Uncaught exception"):
                return msg
    return None
