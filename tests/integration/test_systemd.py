"""SystemdManager against a real systemd (booted in a namespace) running real Orthanc units."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from orchestrator.errors import ServiceError
from orchestrator.host.clock import RealClock
from orchestrator.orthanc.index import index_is_locked
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.detect import detect, make_manager
from orchestrator.services.systemd import SystemdManager
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port, wait_http
from tests.harness.systemd import orthanc_unit

pytestmark = [pytest.mark.orthanc, pytest.mark.systemd]

# A stand-in for a process that ignores SIGTERM (Orthanc installs its own handler).
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "time.sleep(100000)")


def _orthanc_config(root: Path, **overrides) -> tuple[Path, int]:
    port = free_port()
    cfg = base_config(root, port, **overrides)
    path = root / "config" / "orthanc.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2))
    (root / "storage").mkdir(exist_ok=True)
    return path, port


@pytest.fixture
def unit_factory(systemd_sandbox):
    """Install uniquely named units; each one is killed and removed at teardown."""
    names: list[str] = []

    def make(text: str) -> str:
        name = f"orch-svc-{uuid.uuid4().hex[:8]}"
        systemd_sandbox.install_unit(f"{name}.service", text)
        names.append(name)
        return name

    yield make
    for name in names:
        systemd_sandbox.remove_unit(f"{name}.service")


def _manager(sandbox, name: str, config: Path, **kw) -> SystemdManager:
    target = ServiceTarget(name=name, binary=kw.pop("binary", Path(ORTHANC_BINARY)), config=config,
                           index_dir=kw.pop("index_dir", None))
    return SystemdManager(target, sandbox.runner, RealClock(), **kw)


def test_start_status_stop_of_a_real_orthanc_unit(systemd_sandbox, unit_factory, tmp_path):
    config, port = _orthanc_config(tmp_path)
    name = unit_factory(orthanc_unit(config))
    mgr = _manager(systemd_sandbox, name, config, index_dir=tmp_path / "storage")

    assert mgr.status().state == State.STOPPED
    mgr.start(timeout=60)
    status = mgr.status()
    assert status.state == State.RUNNING and status.main_pid
    host_pid = systemd_sandbox.host_pid(status.main_pid)
    assert host_pid is not None
    assert str(config) in psutil.Process(host_pid).cmdline()
    assert wait_http(port)["DatabaseVersion"] == 6
    assert index_is_locked(tmp_path / "storage")
    mgr.start(timeout=60)  # already running: nothing to do
    assert mgr.status().main_pid == status.main_pid

    mgr.stop(timeout=60)
    after = mgr.status()
    assert after.state == State.STOPPED and after.main_pid is None
    assert not psutil.pid_exists(host_pid) or psutil.Process(host_pid).status() == psutil.STATUS_ZOMBIE
    assert not index_is_locked(tmp_path / "storage")
    mgr.stop(timeout=60)  # already stopped: proof only
    assert mgr.stop_commands() == [["systemctl", "stop", f"{name}.service"]]


def test_detection_inside_the_sandbox(systemd_sandbox, unit_factory, tmp_path):
    config, _ = _orthanc_config(tmp_path)
    name = unit_factory(orthanc_unit(config))
    target = ServiceTarget(name=name, binary=Path(ORTHANC_BINARY), config=config)
    kind, why = detect(target, systemd_sandbox.runner)
    assert kind == "systemd" and f"{name}.service" in why
    assert make_manager("auto", target, systemd_sandbox.runner, RealClock()).kind == "systemd"
    unknown = ServiceTarget(name="orch-no-such-unit", binary=Path(ORTHANC_BINARY), config=config)
    kind, why = detect(unknown, systemd_sandbox.runner, init_d=tmp_path)
    assert kind == "process" and "LoadState=not-found" in why


def test_unit_ignoring_sigterm_is_killed_by_systemd_and_reported(systemd_sandbox, unit_factory, tmp_path):
    fake_config = tmp_path / "stubborn.json"
    fake_config.write_text("{}")
    name = unit_factory(orthanc_unit(fake_config, binary=f"{sys.executable} -c '{STUBBORN}'",
                                     service="TimeoutStopSec=2\n"))
    mgr = _manager(systemd_sandbox, name, fake_config, binary=Path(sys.executable))
    mgr.start(timeout=60)
    assert mgr.status().state == State.RUNNING

    mgr.stop(timeout=60)  # systemd escalates to SIGKILL after TimeoutStopSec
    assert any("ignored SIGTERM" in n and "Result=timeout" in n for n in mgr.notes)
    status = mgr.status()
    assert status.state == State.FAILED and "Result=timeout" in status.detail
    mgr.start(timeout=60)  # a failed unit is reset first
    assert any("reset the failed state" in n for n in mgr.notes)
    assert mgr.status().state == State.RUNNING


def test_stop_that_outlasts_the_timeout_is_a_clear_error(systemd_sandbox, unit_factory, tmp_path):
    fake_config = tmp_path / "stubborn.json"
    fake_config.write_text("{}")
    name = unit_factory(orthanc_unit(fake_config, binary=f"{sys.executable} -c '{STUBBORN}'",
                                     service="TimeoutStopSec=300\n"))
    mgr = _manager(systemd_sandbox, name, fake_config, binary=Path(sys.executable))
    mgr.start(timeout=60)
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=3)
    assert f"{name}.service did not stop within 3s" in err.value.message
    assert err.value.completed is not None and err.value.completed.returncode == -1
    assert err.value.completed.argv == ("systemctl", "stop", f"{name}.service")
    assert "systemctl kill" in err.value.hint


def test_start_that_dies_at_once_raises_with_journal_lines(systemd_sandbox, unit_factory, tmp_path):
    config, port = _orthanc_config(tmp_path)
    good = config.read_text()
    config.write_text("{ this is not json")
    # Like Debian's unit: Restart=on-failure, so the crash loop ends in start-limit-hit.
    name = unit_factory(orthanc_unit(config, service="Restart=on-failure\n"))
    mgr = _manager(systemd_sandbox, name, config, index_dir=tmp_path / "storage")
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    message = err.value.message
    assert "died" in message and "journal:" in message
    assert "JSON" in message  # Orthanc's own complaint, from the journal

    config.write_text(good)
    mgr.start(timeout=60)  # reset-failed clears the start limit
    assert wait_http(port)["Name"].startswith("test-")
    mgr.stop(timeout=60)


def test_lingering_process_after_an_inactive_unit_is_an_error(systemd_sandbox, unit_factory, tmp_path):
    config, port = _orthanc_config(tmp_path)
    # KillMode=process: systemd stops the main process only; the Orthanc it forked lingers.
    unit = (f"[Unit]\nDescription=wrapper\nDefaultDependencies=no\n\n[Service]\nType=simple\n"
            f"KillMode=process\nExecStart=/bin/sh -c '{ORTHANC_BINARY} {config} >/dev/null 2>&1 & "
            f"exec sleep 100000'\n")
    name = unit_factory(unit)
    mgr = _manager(systemd_sandbox, name, config, index_dir=tmp_path / "storage", proof_grace=2.0)
    mgr.start(timeout=60)
    wait_http(port)
    try:
        with pytest.raises(ServiceError) as err:
            mgr.stop(timeout=60)
        assert "reports" in err.value.message and "still alive" in err.value.message
        assert mgr.status().state == State.STOPPED  # what systemd says
    finally:
        for proc in psutil.process_iter():
            try:
                if str(config) in proc.cmdline() and proc.cmdline()[0] == ORTHANC_BINARY:
                    proc.kill()
                    proc.wait(10)
            except psutil.Error:
                pass
