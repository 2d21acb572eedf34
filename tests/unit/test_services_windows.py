"""The Windows SC manager's state machine, with FakeRunner (captured-format outputs) and FakeClock."""

from pathlib import Path

import pytest

from orchestrator.errors import Completed, ServiceError
from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.windows import WindowsScManager

DATA = Path(__file__).resolve().parents[1] / "data" / "sc"
QUERY = ("sc.exe", "queryex", "Orthanc")
STOP = ("sc.exe", "stop", "Orthanc")
START = ("sc.exe", "start", "Orthanc")
TARGET = ServiceTarget(name="Orthanc", binary=Path(r"C:\Program Files\Orthanc Server\Orthanc.exe"),
                       config=Path(r"C:\Program Files\Orthanc Server\Configuration"))


def out(name: str, rc: int = 0) -> Completed:
    return Completed((), rc, (DATA / name).read_text(encoding="utf-8"), "")


RUNNING, STOPPED = out("queryex-running.txt"), out("queryex-stopped.txt")
STOP_PENDING, START_PENDING = out("queryex-stop-pending.txt"), out("queryex-start-pending.txt")


def manager(script, clock=None) -> tuple[WindowsScManager, FakeRunner, FakeClock]:
    runner, clock = FakeRunner(script), clock or FakeClock()
    return WindowsScManager(TARGET, runner, clock, proof_grace=0), runner, clock


def test_stop_polls_through_stop_pending_until_stopped():
    mgr, runner, clock = manager({
        QUERY: [RUNNING, STOP_PENDING, STOP_PENDING, STOPPED],
        STOP: out("stop-stop-pending.txt"),
    })
    start = clock.now()
    mgr.stop(timeout=60)
    assert runner.calls.count(STOP) == 1
    assert runner.calls.count(QUERY) == 4
    assert clock.now() - start == pytest.approx(1.0)  # two polls of 0.5 s


def test_stop_of_a_stopped_service_sends_nothing():
    mgr, runner, _ = manager({QUERY: STOPPED})
    mgr.stop(timeout=60)
    assert STOP not in runner.calls


def test_stop_1062_means_already_stopped():
    mgr, runner, _ = manager({QUERY: [RUNNING, STOPPED], STOP: out("stop-1062.txt", 1062)})
    mgr.stop(timeout=60)
    assert any("1062" in n for n in mgr.notes)


def test_stop_1060_is_no_such_service():
    mgr, _, _ = manager({QUERY: out("queryex-1060.txt", 1060)})
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=60)
    assert "no service named Orthanc" in err.value.message
    assert err.value.completed.returncode == 1060
    assert mgr.status().state == State.UNKNOWN


def test_stop_1061_keeps_polling_and_asks_again():
    mgr, runner, _ = manager({
        QUERY: [RUNNING, START_PENDING, RUNNING, RUNNING, STOP_PENDING, STOPPED],
        STOP: [out("stop-1061.txt", 1061), out("stop-stop-pending.txt")],
    })
    mgr.stop(timeout=60)
    assert runner.calls.count(STOP) == 2
    assert any("1061" in n for n in mgr.notes)


def test_stop_access_denied():
    mgr, _, _ = manager({QUERY: RUNNING, STOP: out("stop-5.txt", 5)})
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=60)
    assert "access denied" in err.value.message and "Administrator" in err.value.hint


def test_stop_timeout_with_a_fake_clock():
    mgr, runner, clock = manager({QUERY: [RUNNING, STOP_PENDING], STOP: out("stop-stop-pending.txt")})
    start = clock.now()
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=10)
    assert "did not stop within 10s" in err.value.message and "STOP_PENDING (3)" in err.value.message
    assert "taskkill /PID 4956" in err.value.hint
    assert clock.now() - start == pytest.approx(10.0)


def test_start_polls_until_running_and_settles():
    mgr, runner, clock = manager({
        START: out("start-start-pending.txt"),
        QUERY: [START_PENDING, out("queryex-running-new-pid.txt")],
    })
    mgr.start(timeout=60)
    assert runner.calls[0] == START and runner.calls.count(QUERY) == 3


def test_start_1056_means_already_running():
    mgr, _, _ = manager({START: out("start-1056.txt", 1056), QUERY: RUNNING})
    mgr.start(timeout=60)
    assert any("1056" in n for n in mgr.notes)


def test_start_that_stops_at_once_is_an_error():
    mgr, _, _ = manager({START: out("start-start-pending.txt"),
                         QUERY: [START_PENDING, out("queryex-stopped-1067.txt")]})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert "stopped right after start" in err.value.message and "1067" in err.value.message


def test_start_that_dies_during_the_settle_is_an_error():
    mgr, _, _ = manager({START: out("start-start-pending.txt"),
                         QUERY: [RUNNING, out("queryex-running-new-pid.txt")]})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert "died within 1s" in err.value.message


def test_start_failure_code_is_reported():
    mgr, _, _ = manager({START: out("start-1053.txt", 1053)})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=60)
    assert "error 1053" in err.value.message and err.value.completed.returncode == 1053


def test_start_timeout():
    mgr, _, clock = manager({START: out("start-start-pending.txt"), QUERY: START_PENDING})
    with pytest.raises(ServiceError) as err:
        mgr.start(timeout=20)
    assert "did not reach RUNNING within 20s" in err.value.message


def test_status_and_dry_run_commands():
    mgr, _, _ = manager({QUERY: [RUNNING, out("queryex-stopped-1067.txt")]})
    s = mgr.status()
    assert (s.state, s.main_pid) == (State.RUNNING, 4956)
    assert mgr.status().state == State.FAILED
    assert mgr.stop_commands() == [["sc.exe", "stop", "Orthanc"]]
    assert mgr.start_commands() == [["sc.exe", "start", "Orthanc"]]
