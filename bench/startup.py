#!/usr/bin/env python3
"""Benchmark: wall time of short CLI commands, process start to exit (interpreter included).

    python3 bench/startup.py [--runs 7]

Times `python -c pass` (the floor), `orchestrator --help`, `schema`, `validate` and `plan`
(the target for `plan` is <= 0.4 s) and `inspect` against a throwaway Orthanc config (a
running server for `plan`), each as the median of N runs after one warm-up. Prints figures
and the ratio to the floor; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.world import World  # noqa: E402


def timed(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    root = Path(tempfile.mkdtemp(prefix="orch-bench-startup-"))
    world = World(root / "w")
    try:
        world.start()
        plan = world.plan("  - preflight\n  - stop-service: {timeout: 60}\n  - snapshot\n"
                          "  - upgrade: {timeout: 60, stall: 30}\n  - start-service: {timeout: 60}\n"
                          "  - health-check: {timeout: 60}\n")
        tool = [sys.executable, "-m", "orchestrator"]
        rows = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("orchestrator --help", tool + ["--help"]),
                ("orchestrator schema", tool + ["schema"]),
                ("orchestrator validate", tool + ["validate", str(plan)]),
                ("orchestrator inspect", tool + ["inspect", str(world.config)]),
                ("orchestrator plan", tool + ["plan", str(plan)])]
        floor = None
        print(f"median of {runs} runs, process start to exit")
        for name, argv in rows:
            t = timed(argv, runs)
            floor = floor or t
            print(f"  {name:24} {t * 1000:7.0f} ms   x{t / floor:4.1f} of the floor")
    finally:
        world.kill_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
