"""SIGTERM/SIGHUP interrupt a run (it rolls back), but never cut its rollback short."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from orchestrator import holding


def _held(undoing: bool):
    engine = SimpleNamespace(undoing=undoing, report=SimpleNamespace(notes=[]))
    return holding.Held([], engine)  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_a_signal_going_forwards_interrupts():
    held = _held(undoing=False)
    with pytest.raises(KeyboardInterrupt):
        with holding.signals_interrupt(held):
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_a_signal_during_the_rollback_is_noted_and_ignored():
    held = _held(undoing=True)
    before = signal.getsignal(signal.SIGTERM)
    with holding.signals_interrupt(held):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGHUP)
    assert signal.getsignal(signal.SIGTERM) == before
    assert [n.split(" received")[0] for n in held.engine.report.notes] == \
        [f"signal {int(signal.SIGTERM)}", f"signal {int(signal.SIGHUP)}"]
