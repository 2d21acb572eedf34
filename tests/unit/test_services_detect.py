"""Auto-detection of the service manager, keyed by captured systemctl answers."""

from pathlib import Path

import pytest

from orchestrator.errors import CommandError, Completed, InputError
from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.services.base import POLL, ServiceTarget, read_log_tail, tail_text, wait_for
from orchestrator.services.detect import detect, make_manager
from orchestrator.services.systemd import PROPERTIES

DATA = Path(__file__).resolve().parents[1] / "data" / "systemctl"
SHOW = ("systemctl", "show", "-p", ",".join(PROPERTIES), "orthanc.service")
TARGET = ServiceTarget(name="orthanc", binary=Path("/usr/sbin/Orthanc"), config=Path("/etc/orthanc"))


def answer(name: str) -> Completed:
    return Completed((), 0, (DATA / f"{name}.txt").read_text(), "")


NOT_BOOTED = Completed((), 1, "", (DATA / "not-booted.stderr").read_text())


def test_windows_first():
    kind, why = detect(TARGET, FakeRunner({}), os_name="nt")
    assert kind == "windows" and "nt" in why


def test_systemd_when_it_runs_and_knows_the_unit(tmp_path):
    kind, why = detect(TARGET, FakeRunner({SHOW: answer("active")}), os_name="posix", init_d=tmp_path)
    assert kind == "systemd" and "knows orthanc.service" in why


def test_sysv_when_systemd_does_not_run_and_the_script_exists(tmp_path):
    script = tmp_path / "orthanc"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    kind, why = detect(TARGET, FakeRunner({SHOW: NOT_BOOTED}), os_name="posix", init_d=tmp_path)
    assert kind == "sysv" and "not the running init" in why and str(script) in why


def test_sysv_when_systemd_runs_without_the_unit(tmp_path):
    script = tmp_path / "orthanc"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    kind, why = detect(TARGET, FakeRunner({SHOW: answer("not-found")}), os_name="posix", init_d=tmp_path)
    assert kind == "sysv" and "LoadState=not-found" in why


def test_process_otherwise(tmp_path):
    missing = CommandError("cannot run systemctl: program not found")
    kind, why = detect(TARGET, FakeRunner({SHOW: missing}), os_name="posix", init_d=tmp_path)
    assert kind == "process" and "systemctl is not installed" in why


def test_make_manager_kinds_and_options(tmp_path):
    runner, clock = FakeRunner({SHOW: NOT_BOOTED}), FakeClock()
    for kind in ("systemd", "sysv", "windows", "process"):
        assert make_manager(kind, TARGET, runner, clock).kind == kind
    sysv = make_manager("sysv", TARGET, runner, clock, options={"policy_rc_d": None, "settle": 2})
    assert sysv.policy_rc_d is None and sysv.settle == 2
    # "auto" may land on a kind that does not take every option: those are dropped.
    auto = make_manager("auto", TARGET, runner, clock, options={"policy_rc_d": None, "settle": 2},
                        os_name="nt")
    assert auto.kind == "windows" and auto.settle == 2
    with pytest.raises(InputError):
        make_manager("upstart", TARGET, runner, clock)


def test_wait_for_with_a_fake_clock():
    clock = FakeClock()
    answers = iter([None, None, "done"])
    assert wait_for(clock, 10, lambda: next(answers)) == "done"
    assert clock.now() == pytest.approx(1000 + 2 * POLL)
    assert wait_for(clock, 1, lambda: None) is None
    assert wait_for(clock, 0, lambda: 1) == 1


def test_log_tails(tmp_path):
    assert tail_text("a\n\nb\nc\n", 2) == "b | c"
    assert read_log_tail(None) == "" and read_log_tail(tmp_path / "missing") == ""
    (tmp_path / "old.log").write_text("old\n")
    (tmp_path / "new.log").write_text("x\nlast line\n")
    import os
    os.utime(tmp_path / "old.log", (1, 1))
    assert read_log_tail(tmp_path, 1) == "last line"
