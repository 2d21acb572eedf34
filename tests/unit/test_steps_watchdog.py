"""The upgrade watchdog on real child processes: exit, stall, time limit, interrupt, user, env."""

from __future__ import annotations

import os
import pwd
import sys

import psutil
import pytest

from orchestrator.host.changes import Changes
from orchestrator.host.clock import RealClock
from orchestrator.host.processes import Ended, Processes

PY = sys.executable


def _procs(**kw):
    return Processes(Changes(), RealClock(), **kw)


def test_a_normal_exit_returns_its_code_and_lines_and_reports_the_pid(tmp_path):
    spawned, seen = [], []
    got = _procs().run_watched(
        [PY, "-c", "print('one'); print('two'); raise SystemExit(3)"], text="t",
        log_path=tmp_path / "log", timeout=30, stall=10,
        on_spawn=lambda pid, started: spawned.append((pid, started)), on_line=seen.append)
    assert got.ended == Ended.EXITED and got.returncode == 3
    assert got.lines == ["one", "two"] == seen
    assert spawned and spawned[0][0] == got.pid and spawned[0][1] is not None
    assert (tmp_path / "log").read_text() == "one\ntwo\n"


def test_a_silent_idle_child_is_a_stall_and_is_killed(tmp_path):
    code = "import time, sys; print('Upgrading database version from 5 to 6', flush=True); time.sleep(600)"
    got = _procs().run_watched([PY, "-c", code], text="t", log_path=tmp_path / "log",
                               timeout=120, stall=1.0)
    assert got.ended == Ended.STALL and got.returncode is None
    assert got.quiet >= 1.0 and got.lines == ["Upgrading database version from 5 to 6"]
    assert not psutil.pid_exists(got.pid) or psutil.Process(got.pid).status() == psutil.STATUS_ZOMBIE


def test_a_busy_silent_child_is_not_a_stall_but_meets_the_time_limit(tmp_path):
    code = "x = 0\nwhile True:\n    x += 1\n"
    got = _procs().run_watched([PY, "-c", code], text="t", log_path=tmp_path / "log",
                               timeout=3.0, stall=1.0)
    assert got.ended == Ended.TIMEOUT


def test_an_interrupt_kills_the_child_and_propagates(tmp_path):
    spawned = []

    def on_line(line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _procs().run_watched([PY, "-c", "import time; print('x', flush=True); time.sleep(600)"],
                             text="t", log_path=tmp_path / "log", timeout=60, stall=30,
                             on_spawn=lambda pid, s: spawned.append(pid), on_line=on_line)
    proc = psutil.Process(spawned[0]) if psutil.pid_exists(spawned[0]) else None
    assert proc is None or proc.status() == psutil.STATUS_ZOMBIE


def test_secrets_named_as_hidden_do_not_reach_the_child(tmp_path, monkeypatch):
    monkeypatch.setenv("ORTHANC_TEST_SECRET", "s3cret")
    got = _procs(hidden_env=["ORTHANC_TEST_SECRET"]).run_watched(
        [PY, "-c", "import os; print(os.environ.get('ORTHANC_TEST_SECRET', 'absent'))"], text="t",
        log_path=tmp_path / "log", timeout=30, stall=10)
    assert got.lines == ["absent"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_child_runs_as_the_service_user(tmp_path):
    try:
        pw = pwd.getpwnam("orthanc")
    except KeyError:
        pytest.skip("no orthanc user (apt-get install orthanc)")
    got = _procs().run_watched(["/usr/bin/id", "-u"], text="t", log_path=tmp_path / "log",
                               timeout=30, stall=10, user="orthanc", cwd="/")
    assert got.lines == [str(pw.pw_uid)]


def test_alive_and_end_match_the_pid_and_its_start_time(tmp_path):
    import subprocess

    child = subprocess.Popen([PY, "-c", "import time; time.sleep(600)"])
    try:
        procs = _procs()
        started = procs.started_at(child.pid)
        assert procs.alive(child.pid, started)
        assert not procs.alive(child.pid, started - 100)  # a reused PID is not ours
        procs.end(child.pid, started, "end it", grace=5)
        assert child.wait(10) is not None and not procs.alive(child.pid, started)
    finally:
        if child.poll() is None:
            child.kill()


@pytest.mark.parametrize("pidfd", [True, False])
def test_the_exit_wait_returns_when_the_child_exits_and_closes_its_pidfd(monkeypatch, pidfd):
    import subprocess

    from orchestrator.host.processes import _ExitWait

    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)  # as where there is none
    child = subprocess.Popen([PY, "-c", "import time; time.sleep(0.05)"])
    wait = _ExitWait(child)
    assert (wait.fd is not None) == (pidfd and hasattr(os, "pidfd_open"))
    while child.poll() is None:
        wait(600)  # woken by the exit, not by the timeout
    fd = wait.fd
    wait.close()
    assert wait.fd is None
    if fd is not None:
        with pytest.raises(OSError):
            os.fstat(fd)
