"""The stop proof against Orthanc's real exit window: hundreds of stops, 0 false "still alive".

While Orthanc exits, its command line is already empty and its index unlocked a
few milliseconds before it becomes a zombie. A proof built on a process-table
scan calls it gone in that window, and a later "is PID ... alive?" (what
`StopService.verify` asks) then says yes. Here real Orthancs (1.10.1, tiny
storage, each on its own loopback port) are stopped through the process manager
at a random moment after their start, and every view taken right after `stop()`
returns must agree that the recorded process is gone.

Orthanc takes 2-4 s to exit after SIGTERM on this machine (about half that when its
web server is woken up, `waking`), so the workers run side by side (one Orthanc each,
stopped and started serially); the load only widens the exit window the test is after. Half the starts go through the manager (its child,
reaped), half by hand (the test's child, left a zombie until checked). No timing
is asserted.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.host.changes import Changes
from orchestrator.host.clock import RealClock
from orchestrator.host.processes import Processes
from orchestrator.host.runner import RealRunner
from orchestrator.orthanc.index import index_is_locked
from orchestrator.services import lifetime, proof
from orchestrator.services.base import ServiceTarget, State
from orchestrator.services.lifetime import Recorded
from orchestrator.services.process import ProcessManager
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port, waking

PROCESSES = Processes(Changes(), RealClock())  # its `alive`: what StopService.verify asks

pytestmark = pytest.mark.orthanc

WORKERS = 10
ROUNDS = 20  # per worker: 200 real stops in all
MAX_IDLE = 0.6  # seconds between start and stop, drawn at random (the exit lands on a 0.5 s grid)


def _target(root: Path, port: int) -> ServiceTarget:
    (root / "storage").mkdir(parents=True)
    config = root / "orthanc.json"
    config.write_text(json.dumps(base_config(root, port, HttpThreadsCount=4), indent=2))
    return ServiceTarget(name=f"race-{root.name}", binary=Path(ORTHANC_BINARY), config=config,
                         index_dir=root / "storage", pidfile=root / "orthanc.pid",
                         log_file=root / "orthanc.log")


class Worker(threading.Thread):
    """One Orthanc, started and stopped `rounds` times; records every disagreement."""

    def __init__(self, root: Path, rounds: int, seed: int):
        super().__init__(daemon=True)
        self.port = free_port()
        self.target = _target(root, self.port)
        self.mgr = ProcessManager(self.target, RealRunner(), RealClock(), settle=0.0)
        self.rounds = rounds
        self.rng = random.Random(seed)
        self.stops = 0
        self.problems: list[str] = []
        self.by_hand: subprocess.Popen | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(self.rounds):
                self.one_round(n)
        except BaseException as exc:  # reported by the test, with the round's context
            self.error = exc

    def one_round(self, n: int) -> None:
        if n % 2:
            self.mgr.start(timeout=60)
        else:
            with open(self.target.log_file, "ab") as log:
                self.by_hand = subprocess.Popen([ORTHANC_BINARY, str(self.target.config)],
                                                stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)
            # Popen returns once the exec began, before the kernel has put the new
            # arguments in place (an empty command line for a moment): no scan can tell
            # it is an Orthanc of this config until they are.
            while not psutil.Process(self.by_hand.pid).cmdline():
                time.sleep(0.001)
        status = self.mgr.status()
        assert status.state == State.RUNNING, status.detail
        pid = status.main_pid
        started = lifetime.started_at(pid)
        time.sleep(self.rng.uniform(0.0, MAX_IDLE))

        with waking(self.port):  # hurries Orthanc's web server, not the exit window
            self.mgr.stop(timeout=60)
        self.stops += 1
        # Every view, taken at once after stop() returned, must say "gone".
        views = {
            "lifetime.is_gone": lifetime.is_gone(pid, started),
            "not alive (psutil, as StopService.verify asks)": not PROCESSES.alive(pid, started),
            "manager status stopped": self.mgr.status().state == State.STOPPED,
            "index unlocked": not index_is_locked(self.target.index_dir),
            "recorded by the stop": Recorded(pid, started) in self.mgr.stopped,
        }
        if not all(views.values()):
            self.problems.append(f"round {n}, PID {pid}: " + ", ".join(
                f"{k}={v}" for k, v in views.items()))
        if self.by_hand is not None:
            assert self.by_hand.wait(10) in (0, -15)  # SIGTERM: clean exit (or before its handler)
            self.by_hand = None

    def cleanup(self) -> None:
        for info in proof.service_processes(self.target):
            try:
                psutil.Process(info.pid).kill()
            except psutil.Error:
                pass
        for child in (self.by_hand, self.mgr._child):
            if child is not None:
                child.kill()
                child.wait(10)


def test_hundreds_of_real_stops_never_leave_a_false_still_alive(tmp_path):
    workers = [Worker(tmp_path / f"w{i}", ROUNDS, seed=i) for i in range(WORKERS)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(600)
    finally:
        for w in workers:
            w.cleanup()
    errors = [f"{w.target.name}: {w.error!r}" for w in workers if w.error is not None]
    assert not errors, errors
    problems = [p for w in workers for p in w.problems]
    assert not problems, f"{len(problems)} of {sum(w.stops for w in workers)} stops: {problems[:5]}"
    assert sum(w.stops for w in workers) == WORKERS * ROUNDS
