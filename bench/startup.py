#!/usr/bin/env python3
"""Benchmark: wall and CPU time of short CLI commands, process start to exit (interpreter
included), and `plan` against archives of 2,000 and 20,000 instances.

    python3 bench/startup.py [--runs 7] [--sizes 2000,20000] [--templates DIR] [--base DIR]

Times `python -c pass` (the floor), `orchestrator --help`, `schema`, `validate`, `inspect`
and `plan` against a throwaway Orthanc config (a running server for `plan`), then `plan`
of a full upgrade plan (preflight, stop, snapshot, relocate, upgrade, start, health check)
against a running Orthanc holding each archive size (the target for `plan` is <= 0.3 s at
every size: nothing in it may grow with the archive). The archives are uploaded for real
once (`--templates DIR` keeps them for the next time) and hard-linked per measure.

`--base DIR` runs the same commands from another checkout (e.g. a `git worktree` of an
older commit) with the same interpreter, interleaved with ours, and prints the ratios.
Bytecode is cached (in the temporary folder) unless `--no-bytecode`, as an installed tool
runs. Medians of N runs after one warm-up; CPU is the child's user+system time (steadier than
wall time on a shared machine). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.harness.world import World  # noqa: E402
from upgrade import template_for  # noqa: E402

SMALL_STEPS = ("  - preflight\n  - stop-service: {timeout: 60}\n  - snapshot\n"
               "  - upgrade: {timeout: 60, stall: 30}\n  - start-service: {timeout: 60}\n"
               "  - health-check: {timeout: 60}\n")
FULL_STEPS = ("  - preflight\n  - stop-service: {{timeout: 60}}\n  - snapshot\n"
              "  - relocate: {{to: {to}}}\n  - upgrade: {{timeout: 60, stall: 30}}\n"
              "  - start-service: {{timeout: 60}}\n  - health-check: {{timeout: 60}}\n")


def once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `argv` in `cwd` (`-m` puts it first on the path)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False, env=env, cwd=cwd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def world_with(root: Path, template: Path | None) -> World:
    """A World whose database is `template` hard-linked (the index copied), started."""
    world = World(root)
    if template is not None:
        shutil.copytree(template, world.db, copy_function=os.link, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("index", "index-wal", "index-shm"))
        shutil.copy2(template / "index", world.db / "index")
    return world.start()


def measure(rows: list[tuple[str, list[str]]], trees: dict[str, Path], runs: int,
            cache: Path | None) -> dict:
    """{(row, tree): [(wall, cpu), ...]}, the trees interleaved run by run.

    With `cache`, bytecode is written there on the warm-up run and read afterwards, as an
    installed tool runs; without it every run compiles the sources (PYTHONDONTWRITEBYTECODE).
    """
    envs = {}
    for name, tree in trees.items():
        env = dict(os.environ, PYTHONPATH=str(tree))
        if cache is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(cache / name)
        envs[name] = env
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for n in range(runs + 1):
        order = list(trees) if n % 2 == 0 else list(reversed(trees))
        for name, argv in rows:
            for tree in order:
                t = once(argv, envs[tree], trees[tree])
                if n:  # the first round warms the page cache
                    got.setdefault((name, tree), []).append(t)
    return got


def show(rows: list[tuple[str, list[str]]], trees: dict[str, Path], got: dict) -> None:
    floor = None
    for name, _ in rows:
        line = []
        for tree in trees:
            walls = [w for w, _ in got[(name, tree)]]
            cpus = [c for _, c in got[(name, tree)]]
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            floor = floor or wall
            line.append(f"{tree}: wall {wall * 1000:5.0f} ms [{min(walls) * 1000:.0f}-"
                        f"{max(walls) * 1000:.0f}] cpu {cpu * 1000:5.0f} ms")
        if len(trees) == 2:
            (a, b) = [(statistics.median([w for w, _ in got[(name, t)]]),
                       statistics.median([c for _, c in got[(name, t)]])) for t in trees]
            line.append(f"ours/base wall {a[0] / b[0]:.2f}x cpu {a[1] / b[1]:.2f}x")
        print(f"  {name:28} " + "   ".join(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sizes", default="2000,20000", help="archive sizes for `plan` ('' for none)")
    parser.add_argument("--templates", type=Path, default=None,
                        help="keep the uploaded archives here and reuse them")
    parser.add_argument("--base", type=Path, default=None,
                        help="another checkout to compare with (same interpreter)")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile the sources on every run (no bytecode cache)")
    args = parser.parse_args()
    trees = {"ours": REPO} | ({"base": args.base.resolve()} if args.base else {})
    root = Path(tempfile.mkdtemp(prefix="orch-bench-startup-"))
    worlds: list[World] = []
    try:
        world = world_with(root / "w", None)
        worlds.append(world)
        plan = world.plan(SMALL_STEPS)
        tool = [sys.executable, "-m", "orchestrator"]
        rows = [("python -c pass", [sys.executable, "-c", "pass"]),
                ("orchestrator --help", tool + ["--help"]),
                ("orchestrator schema", tool + ["schema"]),
                ("orchestrator validate", tool + ["validate", str(plan)]),
                ("orchestrator inspect", tool + ["inspect", str(world.config)]),
                ("orchestrator plan", tool + ["plan", str(plan)])]
        for size in [int(s) for s in args.sizes.split(",") if s]:
            big = world_with(root / f"w{size}", template_for(root, size, args.templates))
            worlds.append(big)
            full = big.plan(FULL_STEPS.format(to=big.db.parent / "db-v6-next"))
            rows.append((f"plan, {size} instances", tool + ["plan", str(full)]))
        cache = None if args.no_bytecode else root / "pycache"
        print(f"median [range] of {args.runs} runs, process start to exit, bytecode "
              f"{'compiled every run' if cache is None else 'cached'}; load average "
              f"{os.getloadavg()[0]:.1f}")
        show(rows, trees, measure(rows, trees, args.runs, cache))
    finally:
        for w in worlds:
            w.kill_all()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
