"""The --upgrade classifier against captured Orthanc 1.10.1 logs (tests/data/upgrade_logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.orthanc.upgrade_log import UpgradeOutcome, classify, message_of

LOGS = Path(__file__).resolve().parent.parent / "data" / "upgrade_logs"


def _lines(name: str) -> list[str]:
    return (LOGS / name).read_text().splitlines()


@pytest.mark.parametrize("name, ended, rc, outcome", [
    ("1.10.1-current.log", "exited", 0, UpgradeOutcome.NOTHING_TO_DO),
    ("1.10.1-missing-index.log", "exited", 0, UpgradeOutcome.NOTHING_TO_DO),
    ("constructed-upgraded-5-to-6.log", "exited", 0, UpgradeOutcome.UPGRADED),
    ("1.10.1-too-new.log", "exited", 255, UpgradeOutcome.SCHEMA_TOO_NEW),
    ("1.10.1-too-new.log", "exited", 18, UpgradeOutcome.SCHEMA_TOO_NEW),  # Windows: the error code
    ("1.10.1-too-old.log", "exited", 255, UpgradeOutcome.UPGRADE_FAILED),
    ("1.10.1-fake-schema4-sql-error.log", "exited", 255, UpgradeOutcome.UPGRADE_FAILED),
    ("1.10.1-locked.log", "exited", 255, UpgradeOutcome.INDEX_LOCKED),
    ("1.10.1-bad-json.log", "exited", 255, UpgradeOutcome.BAD_CONFIG),
    ("1.10.1-plain-v5.log", "exited", 255, UpgradeOutcome.FAILED),
    ("1.10.1-deadlock-5.log", "stall", None, UpgradeOutcome.HUNG),
    ("1.10.1-deadlock-5.log", "timeout", None, UpgradeOutcome.TIMED_OUT),
    ("1.10.1-deadlock-5.log", "exited", -9, UpgradeOutcome.KILLED),
    ("1.10.1-current.log", "not-run", None, UpgradeOutcome.NOT_RUN),
])
def test_captured_logs(name, ended, rc, outcome):
    verdict = classify(ended, rc, _lines(name), quiet=5, elapsed=6)
    assert verdict.outcome == outcome
    assert verdict.ok == (outcome in (UpgradeOutcome.UPGRADED, UpgradeOutcome.NOTHING_TO_DO,
                                      UpgradeOutcome.NOT_RUN))
    if not verdict.ok:
        assert verdict.hint


def test_facts_read_from_the_log():
    v = classify("exited", 0, _lines("constructed-upgraded-5-to-6.log"))
    assert (v.schema_before, v.schema_expected) == (5, 6)
    assert v.message == "upgraded the index from schema 5 to 6"
    v = classify("exited", 255, _lines("1.10.1-too-new.log"))
    assert v.schema_before == 7 and "too recent" in v.message and "exit 255" in v.message


def test_the_deadlock_is_named_with_its_way_out():
    v = classify("stall", None, _lines("1.10.1-deadlock-5.log"), quiet=5.0)
    assert "after \"Upgrading database version from 5 to 6\"" in v.message
    assert "1.12.8" in v.hint and "5s" in v.message


def test_a_stall_elsewhere_suggests_a_longer_window():
    v = classify("stall", None, _lines("1.10.1-current.log")[:3], quiet=600)
    assert v.outcome == UpgradeOutcome.HUNG and "stall" in v.hint


def test_exit_0_without_a_known_line_is_not_trusted():
    v = classify("exited", 0, ["something else entirely"])
    assert v.outcome == UpgradeOutcome.FAILED and not v.ok


def test_message_of_strips_level_time_and_source_in_any_build():
    assert message_of('W1127 17:53:29.297250 main.cpp:1408] No upgrade is needed') == \
        "No upgrade is needed"
    assert message_of("I0315 10:00:00.123456  MAIN main.cpp:12] Orthanc has started") == \
        "Orthanc has started"
    assert message_of("plain text] stays") == "plain text] stays"
