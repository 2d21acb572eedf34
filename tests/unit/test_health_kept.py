"""Nothing gone under live traffic: counts may grow, never shrink; listed IDs a superset."""

from __future__ import annotations

import pytest

from orchestrator.errors import StepError
from orchestrator.steps.healthy import kept

BEFORE = {"patients": 2, "studies": 2, "series": 3, "instances": 9}


def test_growth_is_welcome_and_said():
    grown = dict(BEFORE, instances=12, series=4)
    assert kept(BEFORE, grown, {"a", "b"}, {"a", "b", "c"}) == \
        "3 instances more than before (stored meanwhile)"
    assert kept(BEFORE, dict(BEFORE), {"a"}, {"a"}) == ""
    assert kept(None, None, None, None) == ""


def test_a_count_that_shrank_fails_naming_it():
    with pytest.raises(StepError, match="instances shrank"):
        kept(BEFORE, dict(BEFORE, instances=8), None, None)


def test_an_instance_listed_before_and_missing_now_fails_even_when_counts_grew():
    with pytest.raises(StepError, match="1 of the 2 instances listed before the stop are missing"):
        kept(BEFORE, dict(BEFORE, instances=20), {"a", "b"}, {"a", "c", "d"})
