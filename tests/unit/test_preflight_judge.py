"""Preflight's judgement as data: facts (as journaled) and options in, a verdict out."""

from __future__ import annotations

import pytest

from orchestrator.steps.preflight import PreflightFacts, PreflightOptions, judge

MB = 1024 * 1024
BASE = {"binary": "/usr/sbin/Orthanc", "binary_version": "1.12.8", "expected_schema": 6,
        "backend": "sqlite", "storage_dir": "/db", "index_dir": "/db", "upgrade_source": "/db"}
BLOCKER = {"code": "wal", "severity": "blocker", "message": "index-wal pending", "hint": "start it once"}
WARNING = {"code": "plugin", "severity": "warning", "message": "old plugin", "hint": "update"}
ROOM = {"/new": {"free": 100 * MB, "need": 10 * MB, "for": "the relocated index"}}
TIGHT = {"/new": {"free": 5 * MB, "need": 10 * MB, "for": "the relocated index"}}

# (name, facts over BASE, options, refusal text or None, warnings)
CASES = [
    ("nothing to say", {}, {}, None, []),
    ("a warning is shown, not refused", {"hazards": [WARNING]}, {}, None, ["plugin: old plugin"]),
    ("a blocker refuses with its hint", {"hazards": [BLOCKER, WARNING]}, {},
     "preflight refuses: wal: index-wal pending", ["plugin: old plugin"]),
    ("an accepted blocker is a warning", {"hazards": [BLOCKER]}, {"allow_hazards": ["wal"]}, None,
     ["wal: accepted by allow_hazards: index-wal pending"]),
    ("room enough", {"free": ROOM}, {}, None, []),
    ("too little room", {"free": TIGHT}, {},
     "not enough free space for the relocated index at /new: 5 MB free, 11 MB needed", []),
    ("the expected version is the binary's", {"expects_version": "1.12.8"}, {}, None, []),
    ("a version the binary is not refuses", {"expects_version": "9.9.9"}, {},
     "the plan expects Orthanc 9.9.9 (health-check.expect.version), but /usr/sbin/Orthanc is 1.12.8",
     []),
    ("... unless a command before may replace the binary",
     {"expects_version": "9.9.9", "binary_may_change": True}, {}, None,
     ["the plan expects Orthanc 9.9.9; /usr/sbin/Orthanc is 1.12.8 now (a command step before "
      "may replace it)"]),
    ("blockers are told before the room", {"hazards": [BLOCKER], "free": TIGHT}, {},
     "preflight refuses: wal", []),
]


@pytest.mark.parametrize("name,facts,options,refusal,warnings", CASES, ids=[c[0] for c in CASES])
def test_judge(name, facts, options, refusal, warnings):
    verdict = judge(PreflightFacts.from_json({**BASE, **facts}), PreflightOptions.from_json(options))
    if refusal is None:
        assert verdict.refusal is None
    else:
        assert verdict.refusal is not None and refusal in verdict.refusal.message
    assert list(verdict.warnings) == warnings


def test_a_refused_blocker_says_how_to_accept_it():
    verdict = judge(PreflightFacts.from_json({**BASE, "hazards": [BLOCKER]}), PreflightOptions())
    assert verdict.refusal.hint == "start it once (to go on anyway, knowingly: preflight: " \
                                   "{allow_hazards: [wal]})"
