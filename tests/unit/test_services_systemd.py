"""systemctl parsing on outputs captured from the test sandbox, and the manager's state machine."""

from pathlib import Path

import pytest

from orchestrator.errors import CommandError, Completed, ServiceError
from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.systemd import PROPERTIES, SystemdManager, UnitState, parse_show, unit_name

DATA = Path(__file__).resolve().parents[1] / "data" / "systemctl"
SHOW = ("systemctl", "show", "-p", ",".join(PROPERTIES), "orthanc.service")
STOP = ("systemctl", "stop", "orthanc.service")
START = ("systemctl", "start", "orthanc.service")
RESET = ("systemctl", "reset-failed", "orthanc.service")
JOURNAL = ("journalctl", "-u", "orthanc.service", "-n", "10", "--no-pager", "-o", "cat")
TARGET = ServiceTarget(name="orthanc", binary=Path("/usr/sbin/Orthanc-not-installed"),
                       config=Path("/nonexistent/orthanc.json"))


def show(name: str) -> Completed:
    return Completed((), 0, (DATA / f"{name}.txt").read_text(), "")


OK = Completed((), 0, "", "")
JOURNAL_LINES = Completed((), 0, "E1127 Toolbox.cpp:2335] Cannot parse JSON: * Line 1, Column 3\n"
                         "orthanc.service: Main process exited, code=exited, status=255/EXCEPTION\n", "")


@pytest.mark.parametrize("name, state, pid", [
    ("active", State.RUNNING, 64),
    ("inactive", State.STOPPED, None),
    ("stopped-after-run", State.STOPPED, None),
    ("failed-exit-code", State.FAILED, None),
    ("failed-timeout", State.FAILED, None),
    ("auto-restart", State.FAILED, None),
    ("deactivating", State.STOPPING, 195),
    ("not-found", State.UNKNOWN, None),
])
def test_captured_show_outputs(name, state, pid):
    unit = UnitState.from_props(parse_show((DATA / f"{name}.txt").read_text()))
    status = unit.to_status()
    assert status.state == state and status.main_pid == pid
    assert f"ActiveState={unit.active}" in status.detail


def test_parse_show_details():
    props = parse_show((DATA / "failed-timeout.txt").read_text())
    unit = UnitState.from_props(props)
    assert (unit.result, unit.exec_status, unit.restarts) == ("timeout", 9, 0)
    assert parse_show("garbage\n=x\nA=b=c\n") == {"A": "b=c"}
    assert unit_name("orthanc") == "orthanc.service" and unit_name("o.service") == "o.service"


def manager(script) -> tuple[SystemdManager, FakeRunner, FakeClock]:
    runner, clock = FakeRunner({JOURNAL: JOURNAL_LINES, **script}), FakeClock()
    return SystemdManager(TARGET, runner, clock, proof_grace=0), runner, clock


def test_start_then_settle():
    mgr, runner, clock = manager({SHOW: [show("inactive"), show("active")], START: OK})
    mgr.start(timeout=60)
    assert runner.calls == [SHOW, START, SHOW, SHOW]
    assert clock.now() == pytest.approx(1001.0)  # the settle


def test_start_that_dies_within_the_settle_carries_the_journal():
    mgr, _, _ = manager({SHOW: [show("inactive"), show("active"), show("auto-restart")], START: OK})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert "died within 1s of its start (main PID 64" in err.value.message
    assert "journal: E1127 Toolbox.cpp:2335] Cannot parse JSON" in err.value.message


def test_start_that_is_already_dead_when_observed():
    mgr, _, _ = manager({SHOW: [show("inactive"), show("failed-exit-code")], START: OK})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert "died right after start" in err.value.message and "ExecMainStatus=255" in err.value.message


def test_start_of_a_failed_unit_resets_it_first():
    mgr, runner, _ = manager({SHOW: [show("failed-exit-code"), show("active")], START: OK, RESET: OK})
    mgr.start(timeout=60)
    assert runner.calls.index(RESET) < runner.calls.index(START)


def test_start_command_failure():
    failed = Completed(START, 1, "", "Job for orthanc.service failed because the control process exited")
    mgr, _, _ = manager({SHOW: show("inactive"), START: CommandError("systemctl start orthanc.service "
                                                                    "exited with 1", completed=failed)})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert err.value.completed.returncode == 1 and "journal:" in err.value.message


def test_stop_waits_for_inactive_then_proves():
    mgr, runner, _ = manager({SHOW: [show("active"), show("deactivating"), show("stopped-after-run")],
                              STOP: OK})
    mgr.stop(timeout=60)
    assert runner.calls == [SHOW, STOP, SHOW, SHOW]
    assert not mgr.notes


def test_stop_reports_a_sigkill_escalation():
    mgr, _, _ = manager({SHOW: [show("active"), show("failed-timeout")], STOP: OK})
    mgr.stop(timeout=60)
    assert any("ignored SIGTERM" in n for n in mgr.notes)


def test_stop_of_a_stopped_unit_runs_nothing():
    mgr, runner, _ = manager({SHOW: show("inactive")})
    mgr.stop(timeout=60)
    assert STOP not in runner.calls


def test_stop_cancels_a_pending_auto_restart():
    # Dead but with a restart scheduled (Restart=on-failure): only `systemctl stop` cancels it.
    mgr, runner, _ = manager({SHOW: [show("auto-restart"), show("failed-exit-code")], STOP: OK})
    mgr.stop(timeout=60)
    assert STOP in runner.calls


def test_stop_time_out():
    hung = Completed(STOP, -1, "", "")
    mgr, _, _ = manager({SHOW: show("active"),
                         STOP: CommandError("systemctl stop orthanc.service did not finish in 5s",
                                            completed=hung)})
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=5)
    assert "did not stop within 5s" in err.value.message and err.value.completed is hung


def test_unknown_unit():
    mgr, _, _ = manager({SHOW: show("not-found")})
    assert mgr.status().state == State.UNKNOWN
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=5)
    assert "no unit orthanc.service" in err.value.message


def test_systemd_not_running_is_a_service_error():
    down = Completed(SHOW, 1, "", (DATA / "not-booted.stderr").read_text())
    mgr, _, _ = manager({SHOW: down})
    with pytest.raises(ServiceError) as err:
        mgr.status()
    assert "cannot read the state of orthanc.service" in err.value.message
    assert "has not been booted with systemd" in err.value.message
