"""The order of a blue/green plan, checked before anything runs (pure: no server)."""

from __future__ import annotations

import pytest

from orchestrator.plan.loader import parse_plan
from orchestrator.plan.problems import PlanError
from orchestrator.steps import build
from orchestrator.steps.bluegreen.copy import _version

HEAD = """version: 1
service: {name: orthanc, manager: process, binary: /usr/sbin/Orthanc, config: /etc/orthanc/,
          url: "http://127.0.0.1:8042"}
steps:
"""
GOOD = """  - replicate: {to: "http://127.0.0.1:8043", workers: 4}
  - catch-up: {instances: 50, seconds: 3}
  - freeze: {how: command, argv: [/bin/true], undo: [/bin/true]}
  - verify-copy: {apply_deletions: true}
  - switch: {how: command, argv: [/bin/true], undo: [/bin/true]}
"""


def test_a_whole_move_reads_into_typed_steps():
    steps = build(parse_plan(HEAD + GOOD))
    assert [s.id for s in steps] == ["replicate", "catch-up", "freeze", "verify-copy", "switch"]
    assert steps[0].options.to == "http://127.0.0.1:8043" and steps[0].options.workers == 4
    assert steps[3].options.apply_deletions is True


def test_bare_steps_take_their_defaults():
    plan = HEAD + '  - replicate: {to: "http://h:1"}\n  - catch-up\n  - freeze\n  - verify-copy\n  - switch\n'
    steps = build(parse_plan(plan))
    assert steps[2].options.how.value == "stop" and steps[4].options.how.value == "report"


@pytest.mark.parametrize("steps, message", [
    ("  - catch-up\n", "catch-up has no replicate step before it"),
    ('  - replicate: {to: "http://h:1"}\n  - verify-copy\n', "verify-copy before any freeze"),
    ('  - replicate: {to: "http://h:1"}\n  - catch-up\n  - switch\n', "switch without a freeze"),
    ('  - replicate: {to: "http://u:pw@h:1"}\n', "an inline password is not accepted"),
    ('  - replicate: {to: "http://h:1"}\n  - replicate: {to: "http://h:2"}\n',
     "more than one replicate step"),
    ('  - replicate: {to: "ftp://h:1"}\n', "'to'"),
    ('  - replicate: {to: "http://h:1", surprise: 1}\n', "surprise"),
])
def test_a_plan_out_of_order_is_refused_naming_the_step(steps, message):
    with pytest.raises(PlanError) as caught:
        parse_plan(HEAD + steps)
    assert any(message in p.message or message in str(p.path) for p in caught.value.problems), \
        caught.value.problems


def test_an_older_target_is_told_apart():
    assert _version("1.10.1") < _version("1.12.7") and not _version("1.12.7") < _version("1.12.7")


def test_catch_up_stops_after_a_small_or_short_pass():
    from orchestrator.replication.follow import Pass
    from orchestrator.steps.bluegreen.catch_up import CatchUpOptions, converged

    opts = CatchUpOptions(instances=100, seconds=5.0)
    assert converged(Pass(99, 0, 0, 0, 60.0, 1), opts)  # few instances
    assert converged(Pass(5000, 0, 0, 0, 4.0, 1), opts)  # a short pass
    assert not converged(Pass(100, 0, 0, 0, 5.0, 1), opts)
    assert converged(Pass(3, 0, 0, 2, 0.5, 1), opts)  # failures are retried later
    assert not converged(Pass(0, 0, 0, 0, 0.1, 1, aborted="target down"), opts)
