"""ProcessManager against real Orthanc processes: spawn, stop, pidfiles that lie."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.errors import ServiceError
from orchestrator.host.clock import RealClock
from orchestrator.host.runner import RealRunner
from orchestrator.orthanc.index import index_is_locked
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.process import Launch, ProcessManager
from orchestrator.services.sysv import read_pidfile
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port, wait_http

pytestmark = pytest.mark.orthanc


def _target(root: Path, config_text: str | None = None, **kw) -> tuple[ServiceTarget, int]:
    port = free_port()
    config = root / "orthanc.json"
    (root / "storage").mkdir(parents=True, exist_ok=True)
    config.write_text(config_text if config_text is not None
                      else json.dumps(base_config(root, port), indent=2))
    target = ServiceTarget(name="orthanc-test", binary=Path(ORTHANC_BINARY), config=config,
                           index_dir=root / "storage", pidfile=root / "run" / "orthanc.pid",
                           log_file=root / "orthanc.log", **kw)
    return target, port


@pytest.fixture
def manager_factory():
    made: list[ProcessManager] = []

    def make(target: ServiceTarget, **kw) -> ProcessManager:
        mgr = ProcessManager(target, RealRunner(), RealClock(), **kw)
        made.append(mgr)
        return mgr

    yield make
    for mgr in made:  # teardown: kill whatever a failed test left, by PID
        for pid in mgr._pids():
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        if mgr._child is not None:
            mgr._child.wait(10)


@pytest.fixture
def sleeper():
    """Another program, started by the test, whose PID a pidfile can wrongly name."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_start_status_stop(tmp_path, manager_factory):
    target, port = _target(tmp_path)
    mgr = manager_factory(target)
    assert mgr.status().state == State.STOPPED
    mgr.start(timeout=60)
    status = mgr.status()
    assert status.state == State.RUNNING and status.main_pid == read_pidfile(target.pidfile)
    assert psutil.Process(status.main_pid).cmdline() == [ORTHANC_BINARY, str(target.config)]
    assert wait_http(port)["DatabaseVersion"] == 6
    assert index_is_locked(target.index_dir)
    assert mgr.stop_commands() == [["kill", "-TERM", str(status.main_pid)]]

    mgr.stop(timeout=60)
    assert mgr.status().state == State.STOPPED
    assert not target.pidfile.exists()
    assert not index_is_locked(target.index_dir)
    assert "HTTP server listening" in target.log_file.read_text()  # the spawned output went there


def test_orthanc_started_by_someone_else_is_found_without_a_pidfile(tmp_path, manager_factory):
    target, port = _target(tmp_path)
    by_hand = subprocess.Popen([ORTHANC_BINARY, str(target.config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(port)
        mgr = manager_factory(target)
        assert mgr.status().main_pid == by_hand.pid
        mgr.stop(timeout=60)
        assert by_hand.wait(10) == 0  # SIGTERM: Orthanc exits cleanly
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait(10)


def test_stale_pidfile(tmp_path, manager_factory):
    target, port = _target(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait(10)
    target.pidfile.parent.mkdir(parents=True)
    target.pidfile.write_text(f"{gone.pid}\n")
    mgr = manager_factory(target)
    status = mgr.status()
    assert status.state == State.STOPPED and "stale pidfile" in status.detail
    mgr.stop(timeout=30)  # nothing to stop: fine
    mgr.start(timeout=60)
    assert read_pidfile(target.pidfile) == mgr.status().main_pid != gone.pid
    wait_http(port)
    mgr.stop(timeout=60)


def test_pidfile_naming_another_program_never_kills_it(tmp_path, manager_factory, sleeper):
    target, port = _target(tmp_path)
    target.pidfile.parent.mkdir(parents=True)
    target.pidfile.write_text(f"{sleeper.pid}\n")
    mgr = manager_factory(target)
    status = mgr.status()
    assert status.state == State.STOPPED and "another program: ignored" in status.detail
    assert mgr.stop_commands() == []
    mgr.stop(timeout=30)
    assert sleeper.poll() is None  # not signalled

    mgr.start(timeout=60)
    pid = read_pidfile(target.pidfile)
    assert pid != sleeper.pid and mgr.status().main_pid == pid
    wait_http(port)
    mgr.stop(timeout=60)
    assert sleeper.poll() is None


def test_sigterm_ignored_escalates_to_sigkill(tmp_path, manager_factory):
    config = tmp_path / "stubborn.json"
    config.write_text("{}")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    stubborn = subprocess.Popen([sys.executable, "-c", code, str(config)])
    try:
        time.sleep(0.5)  # let it install its handler
        target = ServiceTarget(name="stubborn", binary=Path(sys.executable), config=config,
                               stop_grace=1.0)
        mgr = manager_factory(target)
        mgr.stop(timeout=30)
        assert stubborn.wait(10) == -9
        assert any("sent SIGKILL" in n for n in mgr.notes)
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait(10)


def test_start_that_dies_at_once_raises_with_the_log(tmp_path, manager_factory):
    target, _ = _target(tmp_path, config_text="{ not json")
    mgr = manager_factory(target)
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=30)
    assert "exited with 255 right after start" in err.value.message
    assert "JSON" in err.value.message
    assert mgr.status().state == State.STOPPED


def test_restart_keeps_the_original_arguments_and_working_folder(tmp_path, manager_factory):
    """Started by hand from its install folder with --logdir and a relative config folder
    (how Windows' service runs it): stopped and started again, it runs the same way."""
    install = tmp_path / "install"
    (install / "Configuration").mkdir(parents=True)
    (install / "Logs").mkdir()
    (tmp_path / "storage").mkdir()
    port = free_port()
    (install / "Configuration" / "orthanc.json").write_text(json.dumps(base_config(tmp_path, port)))
    argv = [ORTHANC_BINARY, "--logdir=Logs", "Configuration"]
    by_hand = subprocess.Popen(argv, cwd=install, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    target = ServiceTarget(name="orthanc-test", binary=Path(ORTHANC_BINARY),
                           config=install / "Configuration", index_dir=tmp_path / "storage",
                           log_file=tmp_path / "spawned.log")
    try:
        wait_http(port)
        mgr = manager_factory(target)
        assert mgr.start_commands() == [argv]  # the dry-run text already shows what start will run
        mgr.stop(timeout=60)
        assert by_hand.wait(10) == 0
        assert mgr.launch == Launch(tuple(argv), str(install))
        logs_before = set((install / "Logs").iterdir())

        mgr.start(timeout=60)
        assert wait_http(port)["DatabaseVersion"] == 6
        proc = psutil.Process(mgr.status().main_pid)
        assert proc.cmdline() == argv and proc.cwd() == str(install)
        assert set((install / "Logs").iterdir()) > logs_before  # --logdir=Logs, relative to its cwd
        mgr.stop(timeout=60)
        assert mgr.status().state == State.STOPPED
    finally:
        if by_hand.poll() is None:
            by_hand.kill()
            by_hand.wait(10)


def test_a_later_manager_reuses_a_launch_it_is_given(tmp_path, manager_factory):
    """What a run recorded (e.g. in its journal) lets a rollback in a new process start it the same way."""
    target, port = _target(tmp_path)
    (tmp_path / "Logs").mkdir()
    launch = Launch((ORTHANC_BINARY, "--logdir=Logs", str(target.config)), str(tmp_path))
    assert Launch.from_dict(launch.to_dict()) == launch
    mgr = manager_factory(target, launch=launch)
    assert mgr.start_commands() == [list(launch.argv)]
    mgr.start(timeout=60)
    wait_http(port)
    assert psutil.Process(mgr.status().main_pid).cmdline() == list(launch.argv)
    assert any((tmp_path / "Logs").iterdir())
    mgr.stop(timeout=60)
