"""Stop and start times of a real Orthanc under each service manager (median of 5).

    python bench/services.py [--rounds 5] [--instances 24]

Runs as root (the systemd sandbox and start-stop-daemon need it). For each
manager, the same kind of Orthanc (its own config, port and a few instances)
is started and stopped `rounds` times through the real manager code:

- start: `start()` returning (it includes the 1 s settle that catches a start
  that dies at once), and the time until `/system` answers 200;
- stop: `stop()` returning (the manager's stop plus the proof: every recorded process
  exited, no process left, index unlocked);
- exit to return: from the main process's exit (seen by the bench through a pidfd) to
  `stop()` returning: how long the manager takes to notice the exit and prove it.

A baseline row is the bare process: Popen, poll `/system`, SIGTERM + wait. The rows
"as the tool stops it" wrap the manager's stop as the tool's service port does: Orthanc's
HTTP port is poked every 50 ms meanwhile (orchestrator/host/wake.py), so that its web
server notices the stop at once instead of on its 2 s poll.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.host.clock import RealClock  # noqa: E402
from orchestrator.host.runner import RealRunner  # noqa: E402
from orchestrator.host.wake import waking  # noqa: E402
from orchestrator.services import lifetime, proof  # noqa: E402
from orchestrator.services.base import SETTLE, ServiceTarget  # noqa: E402
from orchestrator.services.process import ProcessManager  # noqa: E402
from orchestrator.services.systemd import SystemdManager  # noqa: E402
from orchestrator.services.sysv import SysvManager  # noqa: E402
from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port  # noqa: E402
from tests.harness.systemd import SystemdSandbox, orthanc_unit, unavailable_reason  # noqa: E402
from tests.harness.sysv import STOCK_SCRIPT, write_test_script  # noqa: E402


def prepare(root: Path, datasets: list[bytes]) -> tuple[Path, int]:
    """A config on a free port and an index holding `datasets`."""
    port = free_port()
    config = root / "orthanc.json"
    (root / "storage").mkdir(parents=True)
    config.write_text(json.dumps(base_config(root, port), indent=2))
    proc = subprocess.Popen([ORTHANC_BINARY, str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_http(port)
        with requests.Session() as s:
            for data in datasets:
                s.post(f"http://127.0.0.1:{port}/instances", data=data, timeout=30).raise_for_status()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return config, port


def wait_http(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/system", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"no Orthanc on port {port}")


class ExitWatch(threading.Thread):
    """Note the moment the recorded processes have all exited (pidfd waits, no polling)."""

    def __init__(self, recorded):
        super().__init__(daemon=True)
        self.recorded = recorded
        self.at: float | None = None

    def run(self) -> None:
        if all(lifetime.wait_gone(r.pid, r.started_at, 300) for r in self.recorded):
            self.at = time.monotonic()


def measure(mgr, port: int, rounds: int, *, wake: bool = False) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start": [], "ready": [], "stop": [], "exit": []}
    for _ in range(rounds):
        t0 = time.monotonic()
        mgr.start(timeout=120)
        t1 = time.monotonic()
        wait_http(port)
        t2 = time.monotonic()
        watch = ExitWatch(proof.recorded_processes(mgr.target))
        watch.start()
        with waking(port if wake else None):
            mgr.stop(timeout=120)
        t3 = time.monotonic()
        watch.join(10)
        out["start"].append(t1 - t0)
        out["ready"].append(t2 - t0)
        out["stop"].append(t3 - t2)
        if watch.at is not None:
            out["exit"].append(t3 - watch.at)
    return out


def baseline(config: Path, port: int, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"start": [], "ready": [], "stop": [], "exit": []}
    for _ in range(rounds):
        t0 = time.monotonic()
        proc = subprocess.Popen([ORTHANC_BINARY, str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        t1 = time.monotonic()
        wait_http(port)
        t2 = time.monotonic()
        watch = ExitWatch([lifetime.record(proc.pid)])
        watch.start()
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        t3 = time.monotonic()
        watch.join(10)
        if watch.at is not None:
            out["exit"].append(max(t3 - watch.at, 0.0))
        out["start"].append(t1 - t0)
        out["ready"].append(t2 - t0)
        out["stop"].append(t3 - t2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=24)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 1
    datasets = make_dataset(args.instances, per_series=3, rows=64, cols=64)
    work = Path(tempfile.mkdtemp(prefix="bench-services-"))
    clock, runner = RealClock(), RealRunner()
    results: dict[str, dict[str, list[float]]] = {}
    sandbox = None
    try:
        config, port = prepare(work / "base", datasets)
        results["bare process (baseline)"] = baseline(config, port, args.rounds)

        config, port = prepare(work / "process", datasets)
        target = ServiceTarget("bench", Path(ORTHANC_BINARY), config, index_dir=config.parent / "storage",
                               pidfile=config.parent / "orthanc.pid", log_file=config.parent / "orthanc.log")
        results["process"] = measure(ProcessManager(target, runner, clock), port, args.rounds)
        results["process, as the tool"] = measure(ProcessManager(target, runner, clock), port,
                                                  args.rounds, wake=True)

        if STOCK_SCRIPT.exists():
            root = work / "sysv"
            config, port = prepare(root, datasets)
            script = write_test_script(root / "init.d", name="bench-sysv", config=config,
                                       pidfile=root / "bench.pid", logdir=root / "log")
            target = ServiceTarget("bench-sysv", Path(ORTHANC_BINARY), config, index_dir=root / "storage",
                                   pidfile=root / "bench.pid", log_file=root / "log")
            mgr = SysvManager(target, runner, clock, script=script, policy_rc_d=None)
            results["sysv (init script)"] = measure(mgr, port, args.rounds)
            results["sysv, as the tool"] = measure(mgr, port, args.rounds, wake=True)

        root = work / "systemd"
        config, port = prepare(root, datasets)
        t0 = time.monotonic()
        sandbox = SystemdSandbox(root / "sandbox").boot()
        boot = time.monotonic() - t0
        sandbox.install_unit("bench-orthanc.service", orthanc_unit(config))
        target = ServiceTarget("bench-orthanc", Path(ORTHANC_BINARY), config, index_dir=root / "storage")
        results["systemd (sandbox)"] = measure(SystemdManager(target, sandbox.runner, clock), port,
                                               args.rounds)
        results["systemd, as the tool"] = measure(SystemdManager(target, sandbox.runner, clock),
                                                  port, args.rounds, wake=True)
    finally:
        if sandbox is not None:
            sandbox.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    base_stop = statistics.median(results["bare process (baseline)"]["stop"])
    print(f"Orthanc {ORTHANC_BINARY}, {args.instances} instances, median of {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs; start() includes a {SETTLE:g} s settle")
    print(f"systemd sandbox boot: {boot:.2f} s")
    print(f"{'manager':<26}{'start() s':>10}{'to HTTP 200 s':>15}{'stop() s':>10}{'stop/bare':>11}"
          f"{'exit to return ms':>19}")
    for name, r in results.items():
        med = {k: statistics.median(v) if v else float("nan") for k, v in r.items()}
        spread = f" [{1000 * min(r['exit']):.0f}-{1000 * max(r['exit']):.0f}]" if r["exit"] else ""
        print(f"{name:<26}{med['start']:>10.2f}{med['ready']:>15.2f}{med['stop']:>10.2f}"
              f"{med['stop'] / base_stop:>11.2f}{1000 * med['exit']:>8.1f}{spread}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
