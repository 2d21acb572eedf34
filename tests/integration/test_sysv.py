"""SysvManager driving a real Orthanc through a scoped copy of Debian's init script."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from orchestrator.errors import ServiceError
from orchestrator.host.clock import RealClock
from orchestrator.host.runner import RealRunner
from orchestrator.orthanc.index import index_is_locked
from orchestrator.services import proof
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.detect import detect
from orchestrator.services.sysv import SysvManager, read_pidfile, unscoped_stop_lines
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port, wait_http
from tests.harness.sysv import STOCK_SCRIPT, write_policy, write_test_script

pytestmark = pytest.mark.orthanc


@pytest.fixture(autouse=True)
def _requirements():
    if not STOCK_SCRIPT.exists():
        pytest.skip(f"{STOCK_SCRIPT} is missing (apt-get install orthanc)")
    if shutil.which("start-stop-daemon") is None or os.geteuid() != 0:
        pytest.skip("needs start-stop-daemon and root (CI runs as root)")


def _setup(root: Path, name: str, config_text: str | None = None):
    port = free_port()
    config = root / "config" / "orthanc.json"
    config.parent.mkdir(parents=True)
    (root / "storage").mkdir()
    config.write_text(config_text if config_text is not None
                      else json.dumps(base_config(root, port), indent=2))
    pidfile, logdir = root / "run" / f"{name}.pid", root / "log"
    pidfile.parent.mkdir()
    script = write_test_script(root / "init.d", name=name, config=config, pidfile=pidfile,
                               logdir=logdir)
    target = ServiceTarget(name=name, binary=Path(ORTHANC_BINARY), config=config,
                           index_dir=root / "storage", pidfile=pidfile, log_file=logdir)
    return target, script, port


def _cleanup(target: ServiceTarget) -> None:
    for info in proof.service_processes(target):
        try:
            os.kill(info.pid, 9)
        except ProcessLookupError:
            pass


def test_start_status_stop_through_the_init_script(tmp_path, orthanc_factory):
    bystander = orthanc_factory()  # another Orthanc on this host: must survive our stop
    target, script, port = _setup(tmp_path, "orch-sysv")
    calls = tmp_path / "policy.log"
    policy = write_policy(tmp_path / "policy-rc.d", 0, log=calls)
    mgr = SysvManager(target, RealRunner(), RealClock(), script=script, policy_rc_d=policy)
    try:
        assert mgr.status().state == State.STOPPED
        mgr.start(timeout=60)
        status = mgr.status()
        assert status.state == State.RUNNING
        assert status.main_pid == read_pidfile(target.pidfile)  # start-stop-daemon --make-pidfile
        assert "status: 0" in status.detail  # the scoped script's LSB answer agrees
        assert wait_http(port)["DatabaseVersion"] == 6
        assert index_is_locked(target.index_dir)
        assert any("other Orthanc" in w for w in mgr.warnings())

        mgr.stop(timeout=60)
        after = mgr.status()
        assert after.state == State.STOPPED and after.main_pid is None
        assert not index_is_locked(target.index_dir)
        assert not target.pidfile.exists()  # the script removes it
        assert calls.read_text().split("\n")[:2] == ["orch-sysv start", "orch-sysv stop"]
        assert bystander.get("/system")["DatabaseVersion"] == 6  # still alive
        assert mgr.stop_commands() == [[str(script), "stop"]]
    finally:
        _cleanup(target)


def test_policy_rc_d_refusal_is_respected(tmp_path):
    target, script, _ = _setup(tmp_path, "orch-sysv-policy")
    policy = write_policy(tmp_path / "policy-rc.d", 101)
    mgr = SysvManager(target, RealRunner(), RealClock(), script=script, policy_rc_d=policy)
    try:
        with pytest.raises(ServiceError) as err:
            mgr.start(timeout=60)
        assert "forbids 'start'" in err.value.message
        assert err.value.completed.returncode == 101
        assert not proof.service_processes(target)  # nothing was started
    finally:
        _cleanup(target)


def test_start_that_dies_at_once_raises_with_the_log(tmp_path):
    target, script, _ = _setup(tmp_path, "orch-sysv-bad", config_text="{ not json")
    mgr = SysvManager(target, RealRunner(), RealClock(), script=script, policy_rc_d=None)
    try:
        with pytest.raises(ServiceError) as err:
            mgr.start(timeout=30)
        assert "JSON" in err.value.message  # the tail of Orthanc's own log
        assert mgr.status().state in (State.STOPPED, State.FAILED)
    finally:
        _cleanup(target)


def test_stock_script_stop_is_refused_while_other_orthancs_run(tmp_path, orthanc_factory):
    # The stock script's stop would kill every Orthanc here. The copy is not executable:
    # if the refusal ever failed, running it would fail too instead of killing anything.
    ours, bystander = orthanc_factory(), orthanc_factory()
    stock_copy = tmp_path / "orthanc"
    stock_copy.write_text(STOCK_SCRIPT.read_text())
    stock_copy.chmod(0o644)
    assert unscoped_stop_lines(stock_copy.read_text())
    target = ServiceTarget(name="orthanc", binary=Path(ORTHANC_BINARY), config=ours.config_path,
                           index_dir=ours.index_path.parent)
    mgr = SysvManager(target, RealRunner(), RealClock(), script=stock_copy, policy_rc_d=None)
    assert any("kills every Orthanc" in w for w in mgr.warnings())
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=30)
    assert "would also kill" in err.value.message and str(bystander.port) not in err.value.message
    assert ours.get("/system") and bystander.get("/system")


def test_detection_picks_the_init_script(tmp_path):
    target, script, _ = _setup(tmp_path, "orch-sysv-detect")
    kind, why = detect(target, RealRunner(), init_d=script.parent, os_name="posix")
    assert kind == "sysv" and str(script) in why
