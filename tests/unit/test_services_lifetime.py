"""lifetime: wait on a recorded process (PID + start time) and say whether it has exited.

Real short-lived processes, no fakes: the answers come from the kernel. The same
cases run with pidfds and, on a Python without `os.pidfd_open`, through psutil.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ServiceError
from orchestrator.host.clock import FakeClock
from orchestrator.services import lifetime, proof
from orchestrator.services.base import ServiceTarget
from orchestrator.services.lifetime import Recorded


@pytest.fixture(params=["pidfd", "psutil"])
def mode(request, monkeypatch):
    if request.param == "pidfd" and not hasattr(os, "pidfd_open"):
        pytest.skip("no os.pidfd_open here")
    if request.param == "psutil":
        monkeypatch.delattr(os, "pidfd_open", raising=False)  # a platform without pidfds
    return request.param


@pytest.fixture
def child():
    procs = []

    def start(seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_a_running_process_is_not_gone_and_a_wait_times_out(mode, child):
    proc = child(60)
    rec = lifetime.record(proc.pid)
    assert rec is not None and rec.pid == proc.pid
    assert not lifetime.is_gone(rec.pid, rec.started_at)
    assert not lifetime.wait_gone(rec.pid, rec.started_at, 0.1)
    assert proc.poll() is None


def test_exit_is_seen_as_a_zombie_then_reaped_and_stays_gone(mode, child):
    proc = child(60)
    rec = lifetime.record(proc.pid)
    proc.kill()
    assert lifetime.wait_gone(rec.pid, rec.started_at, 30)
    # Not reaped by us: a zombie of the test process is already gone...
    assert lifetime.is_gone(rec.pid, rec.started_at)
    assert proc.returncode is None
    # ...and the wait did not steal the exit status from its owner.
    assert proc.wait(10) == -9
    assert lifetime.is_gone(rec.pid, rec.started_at)


def test_a_pid_now_owned_by_another_process_is_gone(mode, child):
    proc = child(60)
    started = lifetime.started_at(proc.pid)
    assert lifetime.is_gone(proc.pid, started - 100.0)  # same number, other start: not ours
    assert not lifetime.is_gone(proc.pid, started)


def test_no_pid_and_no_such_process_are_gone(mode):
    assert lifetime.is_gone(None, None) and lifetime.is_gone(0, None)
    gone = subprocess.Popen(["true"])
    gone.wait(10)
    assert lifetime.wait_gone(gone.pid, None, 1.0)
    assert lifetime.record(gone.pid) is None


def test_wait_all_gone_returns_what_is_still_running(mode, child):
    ended, running = child(60), child(60)
    recs = [lifetime.record(ended.pid), lifetime.record(running.pid)]
    ended.kill()
    assert proof.wait_all_gone(recs, 0.5) == [recs[1]]


def test_the_proof_waits_for_a_recorded_process_even_when_no_scan_sees_it(child):
    proc = child(60)  # not a process of the target's binary: no scan would find it
    rec = lifetime.record(proc.pid)
    target = ServiceTarget(name="orthanc", binary=Path("/nonexistent/Orthanc"),
                           config=Path("/nonexistent/orthanc.json"))
    with pytest.raises(ServiceError) as err:
        proof.prove_stopped(target, FakeClock(), manager="test", grace=1, recorded=(rec,))
    assert f"not exited: PID {proc.pid}" in err.value.message and f"kill {proc.pid}" in err.value.hint
    proc.kill()
    proc.wait(10)
    assert proof.prove_stopped(target, FakeClock(), manager="test", grace=0, recorded=(rec,)).stopped


def test_recorded_describes_its_pid():
    assert Recorded(42, 1.0).describe() == "PID 42"
