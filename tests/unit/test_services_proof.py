"""Proof of stop: a manager that says "stopped" while the process lingers or the index is locked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import Completed, ServiceError
from orchestrator.host.clock import FakeClock
from orchestrator.host.runner import FakeRunner
from orchestrator.services import proof
from orchestrator.services.base import ServiceTarget
from orchestrator.services.systemd import PROPERTIES, SystemdManager

DATA = Path(__file__).resolve().parents[1] / "data" / "systemctl"
SLEEPER = "import time; time.sleep(120)"


@pytest.fixture
def lingering(tmp_path):
    """A real process of `python3` whose arguments name a config file, like an Orthanc would."""
    config = tmp_path / "orthanc.json"
    config.write_text("{}")
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, str(config)])
    yield proc, config
    proc.kill()
    proc.wait(10)


def _target(config: Path, **kw) -> ServiceTarget:
    return ServiceTarget(name="orthanc", binary=Path(sys.executable), config=config, **kw)


def test_processes_are_found_by_binary_and_config(lingering, tmp_path):
    proc, config = lingering
    found = proof.service_processes(_target(config))
    assert [p.pid for p in found] == [proc.pid]
    assert found[0].config == str(config.resolve())
    assert proof.is_service_process(proc.pid, _target(config))
    other = _target(tmp_path / "other.json")
    assert proof.service_processes(other) == []
    assert proc.pid in [p.pid for p in proof.other_instances(other)]
    assert not proof.is_service_process(proc.pid, other)


def test_relative_config_resolves_against_the_process_cwd(tmp_path):
    (tmp_path / "Configuration").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, "--logdir=Logs", "Configuration"],
                            cwd=tmp_path)
    try:
        assert [p.pid for p in proof.service_processes(_target(tmp_path / "Configuration"))] == [proc.pid]
    finally:
        proc.kill()
        proc.wait(10)


def test_manager_says_stopped_but_the_process_lingers(lingering):
    proc, config = lingering
    show = ("systemctl", "show", "-p", ",".join(PROPERTIES), "orthanc.service")
    runner = FakeRunner({
        show: Completed((), 0, (DATA / "inactive.txt").read_text(), ""),
        ("journalctl", "-u", "orthanc.service", "-n", "10", "--no-pager", "-o", "cat"): Completed((), 0),
    })
    mgr = SystemdManager(_target(config), runner, FakeClock(), proof_grace=3)
    with pytest.raises(ServiceError) as err:
        mgr.stop(timeout=30)
    assert "reports orthanc stopped, but it is not" in err.value.message
    assert f"PID {proc.pid}" in err.value.message and f"kill {proc.pid}" in err.value.hint


HOLDER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1])
con.execute("PRAGMA locking_mode=EXCLUSIVE")
con.execute("CREATE TABLE t (x)")
con.execute("INSERT INTO t VALUES (1)")
con.commit()  # the exclusive lock stays, as in a running Orthanc
print("locked", flush=True)
time.sleep(120)
"""


def test_a_locked_index_fails_the_proof(tmp_path):
    # Another process holds the lock (POSIX locks never conflict within one process).
    index_dir = tmp_path / "db"
    index_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(index_dir / "index")],
                              stdout=subprocess.PIPE, text=True)
    target = _target(tmp_path / "none.json", index_dir=index_dir)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ServiceError) as err:
            proof.prove_stopped(target, FakeClock(), manager="test", grace=1)
        assert "index is still locked" in err.value.message
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    ok = proof.prove_stopped(target, FakeClock(), manager="test", grace=1)
    assert ok.stopped and "index is not locked" in ok.detail()


def test_proof_without_index():
    ok = proof.prove_stopped(_target(Path("/nonexistent/c.json")), FakeClock(), manager="t", grace=0)
    assert ok.index_locked is None and "no index to check" in ok.detail()


def _chroot_with(root: Path, binary: str) -> None:
    """A minimal root holding `binary` and the libraries it links (ldd), at the same paths."""
    libs = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for path in [binary] + [w for w in libs.split() if w.startswith("/")]:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0
                    or shutil.which("chroot") is None, reason="chroot needs Linux and root")
def test_a_process_under_another_root_is_not_on_this_host_nor_a_copy_collateral(tmp_path):
    """A container's Orthanc runs the same command line as the host's (`/usr/sbin/Orthanc
    /etc/orthanc/`): a chroot with a copy of the binary, following the same path to a config
    of the same name, is neither the service nor another instance; a copy of the binary at
    another path on this host is another instance, yet not what start-stop-daemon --exec
    would signal; a second process of the real binary is both."""
    binary = os.path.realpath(shutil.which("tail"))
    config = tmp_path / "etc" / "orthanc.json"
    config.parent.mkdir()
    config.write_text("{}")
    jail = tmp_path / "jail"
    _chroot_with(jail, binary)
    inside = jail / str(config).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("{}")
    copy = tmp_path / "copy" / Path(binary).name
    copy.parent.mkdir()
    shutil.copy2(binary, copy)
    other = tmp_path / "other.json"
    other.write_text("{}")
    target = ServiceTarget(name="orthanc", binary=Path(binary), config=config)
    procs = {
        "ours": subprocess.Popen([binary, "-f", str(config)]),
        "jailed": subprocess.Popen(["chroot", str(jail), binary, "-f", str(config)]),
        "copy": subprocess.Popen([str(copy), "-f", str(other)]),
        "second": subprocess.Popen([binary, "-f", str(other)]),
    }
    pid = {k: p.pid for k, p in procs.items()}
    try:
        deadline = time.monotonic() + 10  # chroot execs tail: wait until it did
        while Path(f"/proc/{pid['jailed']}/exe").resolve().name != Path(binary).name:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert [p.pid for p in proof.service_processes(target)] == [pid["ours"]]
        assert proof.is_service_process(pid["ours"], target)
        assert not proof.is_service_process(pid["jailed"], target)
        others = {p.pid for p in proof.other_instances(target)}
        assert {pid["copy"], pid["second"]} <= others and pid["jailed"] not in others
        everywhere = {p.pid: p for _, p in proof.orthanc_processes(Path(binary), any_root=True)}
        assert everywhere[pid["jailed"]].elsewhere and not everywhere[pid["ours"]].elsewhere
        assert "in a container or chroot" in everywhere[pid["jailed"]].describe()
        collateral = {p.pid for p in proof.exec_collateral(target)}
        assert pid["second"] in collateral
        # The jail's path is reachable from here: start-stop-daemon would stat its copy.
        assert not collateral & {pid["ours"], pid["copy"], pid["jailed"]}
    finally:
        for p in procs.values():
            p.kill()
            p.wait(10)


REUSE = """
import os, subprocess, sys, time
from pathlib import Path
import psutil
from orchestrator.services import proof
from orchestrator.services.base import ServiceTarget
config = Path(os.environ["CONFIG"])  # not in this script's own arguments: only the sleepers name it
target = ServiceTarget(name="o", binary=Path(sys.executable), config=config)
argv = [sys.executable, "-c", "import time; time.sleep(60)", str(config)]
a = subprocess.Popen(argv)
while not psutil.Process(a.pid).cmdline():  # Popen returns before exec has set the arguments
    time.sleep(0.001)
assert [p.pid for p in proof.service_processes(target)] == [a.pid]  # psutil now caches A
a.kill()
a.wait()
Path("/proc/sys/kernel/ns_last_pid").write_text(str(a.pid - 1))  # this PID namespace's own
time.sleep(0.05)  # start times differ by more than a clock tick
b = subprocess.Popen(argv)
try:
    assert b.pid == a.pid, (a.pid, b.pid)
    while not psutil.Process(b.pid).cmdline():  # exec'd, its arguments not yet in place
        time.sleep(0.001)
    found = [(p.pid, p.started_at) for p in proof.service_processes(target)]
    print(found == [(b.pid, psutil.Process(b.pid).create_time())], found)
finally:
    b.kill()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0
                    or shutil.which("unshare") is None, reason="a PID namespace needs Linux and root")
def test_a_reused_pid_is_found_as_the_process_that_has_it_now(tmp_path):
    """psutil's process_iter yields its cached object for a PID reused since the last scan
    (is_running() False, the old start time): a just-started Orthanc was missed by the
    first scan after it (seen as a flake of test_stop_race: "no process of the binary with
    this config" right after a start). In a PID namespace of its own, the next PID is set."""
    config = tmp_path / "orthanc.json"
    config.write_text("{}")
    env = {**os.environ, "CONFIG": str(config),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                           REUSE], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True"), done.stdout
