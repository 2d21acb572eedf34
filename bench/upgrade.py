#!/usr/bin/env python3
"""Benchmark: the downtime of `orchestrator run` against the same upgrade done by hand.

For each archive size (2,000 instances, then 20,000), rounds are interleaved (the path
that goes first alternates), each in a fresh installation: new folders, the template's
attachments hard-linked (they are immutable), a fresh copy of the index, a fresh Orthanc.

Both paths do the same work:

- by hand: before the stop, link every attachment into `db-v6-next` (the tool's staging);
  after a random idle, SIGTERM and wait for the exit; copy the index to a snapshot folder
  and into `db-v6-next` (fsync'd, like the tool); point the config at `db-v6-next`;
  `Orthanc --upgrade CONFIG`; start; poll GET /system until the first 200;
- the tool: after a random idle, `orchestrator run` with preflight, stop-service,
  snapshot, relocate (staged before the stop), upgrade, start-service and health-check.

The idle is random (0-1 s) because Orthanc's exit after SIGTERM lands on a 0.5 s grid
set by its start: a fixed delay would give one path the same point of the grid every time.

Two figures per round, both from outside (the bench is Orthanc's parent and sees its exit
through a pidfd; a prober polls /system every 10 ms):

- exit-to-healthy: Orthanc's exit -> the first 200 from the new process. This is what
  each path controls; Orthanc's own shutdown is not in it.
- whole window: the last 200 before the stop -> the first 200 after.

Printed: medians and ranges per path, then the tool against the by-hand figure as a
difference and a ratio, per size; the tool's own step times, and when each step ended
after Orthanc's exit (from its journal: where the post-exit time goes). Then `orchestrator
plan`'s wall time. Asserts nothing.

    python3 bench/upgrade.py [--sizes 2000,20000] [--rounds 5] [--plan-runs 9] [--templates DIR]

(`--templates DIR` keeps the stopped template databases there and reuses them next time.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
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

from orchestrator.services import lifetime  # noqa: E402
from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port  # noqa: E402

POLL = 0.01  # seconds between two probes of /system
MAX_IDLE = 1.0  # the random idle before a stop: two periods of Orthanc's 0.5 s exit grid
WARM = 3.0  # Orthanc exits slowly when stopped within ~3 s of its start: let it settle first


class Prober(threading.Thread):
    """Poll /system; remember the last 200 before the first failure and the first 200 after."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.last_up: float | None = None
        self.down_at: float | None = None
        self.back_at: float | None = None

    def run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
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


class ExitWatch(threading.Thread):
    """Note the moment a process exits (a pidfd wait: woken by the kernel, no polling)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.started = lifetime.started_at(pid)
        self.at: float | None = None
        self.wall: float | None = None  # the same moment on the wall clock (the journal's)

    def run(self) -> None:
        if lifetime.wait_gone(self.pid, self.started, 900):
            self.at, self.wall = time.monotonic(), time.time()


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


def fresh_copy(template: Path, dest: Path) -> None:
    """New folders with the template's attachments hard-linked and the index copied."""
    shutil.copytree(template, dest, copy_function=os.link,
                    ignore=shutil.ignore_patterns("index", "index-wal", "index-shm"))
    shutil.copy2(template / "index", dest / "index")


def copy_synced(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Round:
    """A fresh installation (linked from the template) with a running Orthanc."""

    def __init__(self, root: Path, template: Path):
        self.root = root
        self.db = root / "lib" / "db-v6"
        self.next = root / "lib" / "db-v6-next"
        fresh_copy(template, self.db)
        self.port = free_port()
        self.config = root / "conf" / "orthanc.json"
        self.config.parent.mkdir(parents=True)
        self.write_config(self.db)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = self.spawn()
        wait_up(self.url)
        time.sleep(WARM)

    def write_config(self, db: Path) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(json.dumps(base_config(self.root, self.port, StorageDirectory=str(db),
                                              IndexDirectory=str(db)), indent=2))
        os.replace(tmp, self.config)

    def spawn(self) -> subprocess.Popen:
        return subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def by_hand(self, idle: float) -> dict:
        # Staging, as the tool does before its stop: every attachment linked into the new folder.
        shutil.copytree(self.db, self.next, copy_function=os.link,
                        ignore=shutil.ignore_patterns("index", "index-wal", "index-shm"))
        watch, prober = ExitWatch(self.proc.pid), Prober(self.url)
        watch.start()
        prober.start()
        time.sleep(idle)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(120)
        copy_synced(self.db / "index", self.root / "snapshot" / "index")
        copy_synced(self.db / "index", self.next / "index")
        self.write_config(self.next)
        subprocess.run([ORTHANC_BINARY, "--upgrade", str(self.config)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = self.spawn()
        prober.join(120)
        watch.join(10)
        return figures(prober, watch)

    def with_tool(self, idle: float) -> dict:
        plan = self.root / "plan.yaml"
        plan.write_text(
            f"version: 1\nstate_dir: {self.root / 'state'}\nservice:\n  name: bench\n"
            f"  manager: process\n  binary: {ORTHANC_BINARY}\n  config: {self.config}\n"
            f"  url: {self.url}\n  log_file: {self.root / 'service.log'}\nsteps:\n"
            f"  - preflight\n  - stop-service\n  - snapshot\n"
            f"  - relocate: {{to: {self.next}}}\n  - upgrade\n"
            f"  - start-service\n  - health-check\n")
        watch, prober = ExitWatch(self.proc.pid), Prober(self.url)
        watch.start()
        prober.start()
        time.sleep(idle)
        done = cli("run", str(plan), "--json")
        prober.join(120)
        watch.join(10)
        self.proc.wait(10)  # the bench is its parent: reap it
        report = json.loads(done.stdout)
        if report["exit_code"] != 0:
            raise RuntimeError(f"the run failed: {report['error']}")
        out = figures(prober, watch)
        out["own"] = report["downtime"]
        out["steps"] = {s["id"]: s["seconds"] for s in report["steps"] if s.get("seconds") is not None}
        out["after_exit"] = after_exit(self.root / "state" / "bench.journal", watch.wall)
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if cmd and cmd[0] == ORTHANC_BINARY and str(self.config) in cmd:
                proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def figures(prober: Prober, watch: ExitWatch) -> dict:
    if prober.back_at is None or prober.last_up is None or watch.at is None:
        raise RuntimeError("the prober or the exit watch saw nothing")
    return {"exit_to_healthy": prober.back_at - watch.at, "window": prober.back_at - prober.last_up}


def after_exit(journal: Path, exit_wall: float | None) -> dict[str, float]:
    """Seconds from Orthanc's exit to each step's `step-done` record (journal times, 1 ms)."""
    out: dict[str, float] = {}
    try:
        lines = journal.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        done_at = rec.get("time", 0)
        if exit_wall is not None and rec.get("event") == "step-done" and done_at >= exit_wall - 0.002:
            out[str(rec.get("step"))] = done_at - exit_wall
    return out


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
            f"  - relocate: {{to: {r.next}}}\n  - upgrade\n"
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


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s [{min(values):.3f}-{max(values):.3f}]"


def template_for(work: Path, size: int, keep: Path | None) -> Path:
    """The template of `size` instances: built in `work`, or reused from (built into) `keep`."""
    if keep is None:
        return build_template(work / f"template-{size}", size)
    db = keep / f"template-{size}" / "db-v6"
    if not (db / "index").exists():
        shutil.rmtree(db.parent, ignore_errors=True)
        build_template(db.parent, size)
    return db


def run_size(work: Path, size: int, rounds: int, rng: random.Random,
             keep: Path | None = None) -> dict:
    t0 = time.monotonic()
    template = template_for(work, size, keep)
    files = sum(len(f) for _, _, f in os.walk(template))
    print(f"\n== {size} instances ({files} files in the database folder; built in "
          f"{time.monotonic() - t0:.0f}s), {rounds} interleaved rounds", flush=True)
    got: dict[str, list[dict]] = {"hand": [], "tool": []}
    for n in range(rounds):
        order = ("hand", "tool") if n % 2 == 0 else ("tool", "hand")
        line = []
        for path in order:
            idle = rng.uniform(0, MAX_IDLE)
            r = Round(work / f"{path}-{size}-{n}", template)
            try:
                got[path].append(r.by_hand(idle) if path == "hand" else r.with_tool(idle))
            finally:
                r.close()
            f = got[path][-1]
            line.append(f"{path} exit-to-healthy {f['exit_to_healthy']:.3f} s, window {f['window']:.3f} s "
                        f"(idle {idle:.2f})")
        print(f"  round {n + 1}: " + "; ".join(line) + f"; load {os.getloadavg()[0]:.1f}",
              flush=True)
    out = {}
    for key, label in (("exit_to_healthy", "exit-to-healthy"), ("window", "whole window")):
        hand = [f[key] for f in got["hand"]]
        tool = [f[key] for f in got["tool"]]
        mh, mt = statistics.median(hand), statistics.median(tool)
        out[key] = (mh, mt)
        print(f"  {label:<16} by hand {spread(hand)}   tool {spread(tool)}   "
              f"tool - hand {mt - mh:+.3f} s   tool / hand {mt / mh:.2f}x")
    own = [f["own"] for f in got["tool"] if f.get("own") is not None]
    if own:
        print(f"  the tool's own report (stop-service start -> health-check end): {spread(own)}")
    steps: dict[str, list[float]] = {}
    for f in got["tool"]:
        for k, v in f["steps"].items():
            steps.setdefault(k, []).append(v)
    print("  tool steps, median s: " + ", ".join(f"{k} {statistics.median(v):.3f}"
                                                  for k, v in steps.items()))
    marks: dict[str, list[float]] = {}
    for f in got["tool"]:
        for k, v in f.get("after_exit", {}).items():
            marks.setdefault(k, []).append(v)
    if marks:
        print("  tool, Orthanc's exit -> step done, median s: " + ", ".join(
            f"{k} {statistics.median(v):+.3f}" for k, v in marks.items()))
    if keep is None:
        shutil.rmtree(template.parent, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plan-runs", type=int, default=9)
    ap.add_argument("--seed", type=int, default=None, help="for the random idles")
    ap.add_argument("--templates", type=Path, default=None,
                    help="keep the stopped template databases here and reuse them")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    results = {}
    print(f"Orthanc {ORTHANC_BINARY}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    try:
        for size in sizes:
            results[size] = run_size(work, size, args.rounds, rng, args.templates)
        if len(results) > 1:
            small, large = min(results), max(results)
            for key, label in (("exit_to_healthy", "exit-to-healthy"), ("window", "whole window")):
                (h0, t0), (h1, t1) = results[small][key], results[large][key]
                print(f"\n{label} growth {small} -> {large} instances: by hand {h1 - h0:+.3f} s, "
                      f"tool {t1 - t0:+.3f} s; the tool adds {t0 - h0:+.3f} s at {small}, "
                      f"{t1 - h1:+.3f} s at {large}")
        if args.plan_runs:
            times = plan_wall_time(work, build_template(work / "template-plan", 50), args.plan_runs)
            print(f"\n`orchestrator plan` wall time over {len(times)} runs: {spread(times)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
