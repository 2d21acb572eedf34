#!/usr/bin/env python3
"""Benchmark: the downtime `orchestrator run` adds to a bare by-hand upgrade, and `plan`'s wall time.

For each archive size (2,000 instances, then 20,000), in fresh folders every round:

- by hand: SIGTERM the Orthanc, wait for it to exit, `Orthanc --upgrade CONFIG`, start it,
  poll GET /system until the first 200;
- the tool: `orchestrator run` with snapshot and relocation (links pre-staged before the stop).

Downtime is measured two ways, side by side: by an outside prober polling /system every
20 ms (last 200 before the stop -> first 200 after), and, for the tool, its own report
(stop-service start -> health-check end). Then `orchestrator plan` is timed end to end
(process start to exit) against a running server.

    python3 bench/upgrade.py [--sizes 2000,20000] [--rounds 3] [--plan-runs 9]

Prints figures and medians; asserts nothing (targets: the tool adds <= 0.3 s, its downtime does
not grow with the number of files, `plan` <= 0.4 s).
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port  # noqa: E402

POLL = 0.02


class Prober(threading.Thread):
    """Poll /system; remember the last 200 before the first failure and the first 200 after."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stop_event = threading.Event()
        self.last_up: float | None = None
        self.down_at: float | None = None
        self.back_at: float | None = None

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            now = time.monotonic()
            try:
                ok = session.get(f"{self.url}/system", timeout=0.5).status_code == 200
            except requests.RequestException:
                ok = False
                session = requests.Session()
            if ok and self.down_at is None:
                self.last_up = now
            elif not ok and self.down_at is None:
                self.down_at = now
            elif ok and self.back_at is None:
                self.back_at = now
                return
            time.sleep(POLL)

    def window(self) -> float | None:
        if self.last_up is None or self.back_at is None:
            return None
        return self.back_at - self.last_up


def build_template(root: Path, count: int) -> Path:
    """An Orthanc database folder holding `count` instances (uploaded for real), stopped."""
    db = root / "db-v6"
    db.mkdir(parents=True)
    port = free_port()
    cfg = root / "orthanc.json"
    cfg.write_text(json.dumps(base_config(root, port, StorageDirectory=str(db), IndexDirectory=str(db))))
    proc = subprocess.Popen([ORTHANC_BINARY, str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url)
        data = make_dataset(count, per_series=50, rows=8, cols=8)
        sessions = [requests.Session() for _ in range(4)]

        def post(i: int) -> None:
            sessions[i % 4].post(f"{url}/instances", data=data[i], timeout=60).raise_for_status()

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, range(count)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return db


def wait_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/system", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(POLL)
    raise RuntimeError(f"no Orthanc on {url}")


class Round:
    """A fresh installation (a copy of the template) with a running Orthanc."""

    def __init__(self, root: Path, template: Path):
        self.root = root
        self.db = root / "lib" / "db-v6"
        shutil.copytree(template, self.db)
        self.port = free_port()
        self.config = root / "conf" / "orthanc.json"
        self.config.parent.mkdir(parents=True)
        self.config.write_text(json.dumps(base_config(root, self.port, StorageDirectory=str(self.db),
                                                      IndexDirectory=str(self.db)), indent=2))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = self.spawn()
        wait_up(self.url)

    def spawn(self) -> subprocess.Popen:
        return subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def by_hand(self) -> float:
        prober = Prober(self.url)
        prober.start()
        time.sleep(0.2)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        subprocess.run([ORTHANC_BINARY, "--upgrade", str(self.config)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = self.spawn()
        prober.join(120)
        return prober.window()

    def with_tool(self) -> tuple[float, float, dict]:
        plan = self.root / "plan.yaml"
        plan.write_text(
            f"version: 1\nstate_dir: {self.root / 'state'}\nservice:\n  name: bench\n"
            f"  manager: process\n  binary: {ORTHANC_BINARY}\n  config: {self.config}\n"
            f"  url: {self.url}\n  log_file: {self.root / 'service.log'}\nsteps:\n"
            f"  - preflight\n  - stop-service\n  - snapshot\n"
            f"  - relocate: {{to: {self.root / 'lib' / 'db-v6-next'}}}\n  - upgrade\n"
            f"  - start-service\n  - health-check\n")
        prober = Prober(self.url)
        prober.start()
        time.sleep(0.2)
        done = cli("run", str(plan), "--json")
        prober.join(120)
        report = json.loads(done.stdout)
        if report["exit_code"] != 0:
            raise RuntimeError(f"the run failed: {report['error']}")
        return prober.window(), report["downtime"], report

    def close(self) -> None:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0] == ORTHANC_BINARY and str(self.config) in cmd:
                proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, env=env, timeout=600)


def plan_wall_time(work: Path, template: Path, runs: int) -> list[float]:
    r = Round(work / "plan-timing", template)
    try:
        plan = r.root / "plan.yaml"
        plan.write_text(
            f"version: 1\nstate_dir: {r.root / 'state'}\nservice:\n  name: bench\n"
            f"  manager: process\n  binary: {ORTHANC_BINARY}\n  config: {r.config}\n"
            f"  url: {r.url}\nsteps:\n  - preflight\n  - stop-service\n  - snapshot\n"
            f"  - relocate: {{to: {r.root / 'lib' / 'db-v6-next'}}}\n  - upgrade\n"
            f"  - start-service\n  - health-check\n")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            done = cli("plan", str(plan))
            times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise RuntimeError(done.stdout + done.stderr)
        return times
    finally:
        r.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--plan-runs", type=int, default=9)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    results = {}
    try:
        for size in sizes:
            t0 = time.monotonic()
            template = build_template(work / f"template-{size}", size)
            files = sum(len(f) for _, _, f in os.walk(template))
            print(f"\n== {size} instances ({files} files in the database folder; built in "
                  f"{time.monotonic() - t0:.0f}s)")
            hand, tool, tool_own = [], [], []
            for n in range(args.rounds):
                r = Round(work / f"hand-{size}-{n}", template)
                try:
                    hand.append(r.by_hand())
                finally:
                    r.close()
                r = Round(work / f"tool-{size}-{n}", template)
                try:
                    outside, own, report = r.with_tool()
                    tool.append(outside)
                    tool_own.append(own)
                    steps = {s["id"]: s["seconds"] for s in report["steps"]}
                finally:
                    r.close()
                print(f"  round {n + 1}: by hand {hand[-1]:.3f}s   tool {tool[-1]:.3f}s "
                      f"(its own report: {tool_own[-1]:.3f}s; steps: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()) + ")")
            mh, mt, mo = statistics.median(hand), statistics.median(tool), statistics.median(tool_own)
            results[size] = (mh, mt, mo)
            print(f"  median: by hand {mh:.3f}s, tool {mt:.3f}s (own report {mo:.3f}s): "
                  f"the tool adds {mt - mh:+.3f}s")
        if len(results) > 1:
            small, large = min(results), max(results)
            print(f"\ndowntime growth {small} -> {large} instances: by hand "
                  f"{results[large][0] - results[small][0]:+.3f}s, tool "
                  f"{results[large][1] - results[small][1]:+.3f}s")
        times = plan_wall_time(work, build_template(work / "template-plan", 50), args.plan_runs)
        print(f"\n`orchestrator plan` wall time over {len(times)} runs: median "
              f"{statistics.median(times):.3f}s (min {min(times):.3f}s, max {max(times):.3f}s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
