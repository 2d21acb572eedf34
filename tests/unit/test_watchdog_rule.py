"""The watchdog's rule as data: samples in, (last activity, verdict) out. No process, no clock."""

from __future__ import annotations

import pytest

from orchestrator.host.processes import (CPU_FLOOR, IO_FLOOR, Activity, Ended, Sample,
                                         watchdog)

T, STALL = 100.0, 10.0

# (name, last activity, sample, expected last activity, expected verdict)
CASES = [
    ("quiet but not for long", Activity(0, 1.0, 500), Sample(5, False, 1.0, 500),
     Activity(0, 1.0, 500), None),
    ("quiet for the stall time", Activity(0, 1.0, 500), Sample(10, False, 1.0, 500),
     Activity(0, 1.0, 500), Ended.STALL),
    ("a log line is activity", Activity(0, 1.0, 500), Sample(10, True, 1.0, 500),
     Activity(10, 1.0, 500), None),
    ("CPU at the floor is activity", Activity(0, 1.0, 500),
     Sample(4, False, 1.0 + CPU_FLOOR, 500), Activity(4, 1.0 + CPU_FLOOR, 500), None),
    ("CPU below the floor is not", Activity(0, 1.0, 500), Sample(10, False, 1.0 + CPU_FLOOR / 2, 500),
     Activity(0, 1.0, 500), Ended.STALL),
    ("a long quiet needs 1 % of it in CPU", Activity(0, 0.0, 0), Sample(50, False, 0.4, 0),
     Activity(0, 0.0, 0), Ended.STALL),
    ("... and 1 % is enough", Activity(0, 0.0, 0), Sample(50, False, 0.5, 0),
     Activity(50, 0.5, 0), None),
    ("I/O above the floor is activity", Activity(0, 1.0, 500), Sample(10, False, 1.0, 500 + IO_FLOOR),
     Activity(10, 1.0, 500 + IO_FLOOR), None),
    ("I/O below the floor is not", Activity(0, 1.0, 500), Sample(10, False, 1.0, 500 + IO_FLOOR - 1),
     Activity(0, 1.0, 500), Ended.STALL),
    ("past the time limit, even when busy", Activity(99, 1.0, 0), Sample(100, True, 9.0, 10**6),
     Activity(100, 9.0, 10**6), Ended.TIMEOUT),
    ("the limit wins over a stall", Activity(0, 0.0, 0), Sample(100, False, 0.0, 0),
     Activity(0, 0.0, 0), Ended.TIMEOUT),
]


@pytest.mark.parametrize("name,last,sample,after,verdict", CASES, ids=[c[0] for c in CASES])
def test_the_watchdog_rule(name, last, sample, after, verdict):
    assert watchdog(last, sample, timeout=T, stall=STALL) == (after, verdict)


def test_a_deadlock_is_seen_after_exactly_the_stall_time_of_samples():
    last, seen = Activity(0, 2.0, 100), None
    for t in range(1, 30):
        last, seen = watchdog(last, Sample(float(t), t < 5, 2.0 + 0.001 * t, 100),
                              timeout=T, stall=STALL)
        if seen:
            break
    assert (t, seen) == (4 + STALL, Ended.STALL)
