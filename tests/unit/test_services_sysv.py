"""SysV pieces that need no daemon: unscoped stop lines, pidfiles, policy-rc.d answers."""

from pathlib import Path

import pytest

from orchestrator.errors import Completed, ServiceError
from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.services.base import ServiceTarget
from orchestrator.services.sysv import SysvManager, read_pidfile, unscoped_stop_lines
from tests.harness.sysv import STOCK_SCRIPT, adapt_init_script

TARGET = ServiceTarget(name="orthanc", binary=Path("/usr/sbin/Orthanc-not-installed"),
                       config=Path("/nonexistent/orthanc.json"))


def test_unscoped_stop_lines():
    script = "\n".join([
        "start-stop-daemon --stop --quiet --retry=TERM/30/KILL/5 --pidfile $PIDFILE --name $NAME",
        "start-stop-daemon --stop --quiet --oknodo --retry=0/1/KILL/5 --exec $DAEMON",
        "# start-stop-daemon --stop --exec $DAEMON   (a comment)",
        "start-stop-daemon --start --exec $DAEMON",
        "start-stop-daemon -K -x $DAEMON",
        "start-stop-daemon -K -p $PIDFILE -x $DAEMON",
    ])
    assert unscoped_stop_lines(script) == [2, 5]


@pytest.mark.skipif(not STOCK_SCRIPT.exists(), reason="Debian's orthanc package is not installed")
def test_the_stock_script_is_flagged_and_the_adapted_copy_is_not(tmp_path):
    stock = STOCK_SCRIPT.read_text()
    assert unscoped_stop_lines(stock)  # the kill-every-Orthanc line
    adapted = adapt_init_script(stock, script_path=tmp_path / "o", config=tmp_path / "c.json",
                                pidfile=tmp_path / "o.pid", logdir=tmp_path / "log")
    assert unscoped_stop_lines(adapted) == []
    assert f"PIDFILE={tmp_path / 'o.pid'}" in adapted and str(tmp_path / "c.json") in adapted


def test_read_pidfile(tmp_path):
    p = tmp_path / "x.pid"
    assert read_pidfile(p) is None and read_pidfile(None) is None
    p.write_text("1234\n")
    assert read_pidfile(p) == 1234
    p.write_text("garbage")
    assert read_pidfile(p) is None
    p.write_bytes(b"\xff\xfe")
    assert read_pidfile(p) is None


def _policy(tmp_path, rc):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n")
    runner = FakeRunner({(str(policy), "orthanc", "stop"): Completed((), rc, "", "")})
    return SysvManager(TARGET, runner, FakeClock(), script=tmp_path / "orthanc", policy_rc_d=policy), runner


@pytest.mark.parametrize("rc", [0, 104, 105])
def test_policy_allows(tmp_path, rc):
    mgr, runner = _policy(tmp_path, rc)
    mgr.check_policy("stop")
    assert len(runner.calls) == 1


def test_policy_101_forbids(tmp_path):
    mgr, _ = _policy(tmp_path, 101)
    with pytest.raises(ServiceError) as err:
        mgr.check_policy("stop")
    assert "forbids 'stop' of orthanc (exit 101)" in err.value.message
    assert err.value.completed.returncode == 101


@pytest.mark.parametrize("rc", [100, 102, 106])
def test_policy_other_codes_refuse(tmp_path, rc):
    mgr, _ = _policy(tmp_path, rc)
    with pytest.raises(ServiceError) as err:
        mgr.check_policy("stop")
    assert f"exit {rc}" in err.value.message


def test_no_policy_means_no_question(tmp_path):
    runner = FakeRunner({})
    SysvManager(TARGET, runner, FakeClock(), policy_rc_d=None).check_policy("stop")
    SysvManager(TARGET, runner, FakeClock(), policy_rc_d=tmp_path / "absent").check_policy("stop")
    assert runner.calls == []


def test_stop_of_a_stopped_service_does_not_run_the_script(tmp_path):
    # No process has this config: the script (possibly the kill-all stock one) never runs.
    runner = FakeRunner({})
    SysvManager(TARGET, runner, FakeClock(), script=tmp_path / "orthanc",
                policy_rc_d=None, proof_grace=0).stop(timeout=30)
    assert runner.calls == []
