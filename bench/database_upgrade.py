#!/usr/bin/env python3
"""Benchmark: downtime of a PostgreSQL-backed Orthanc upgrade, by hand against the tool.

One throwaway PostgreSQL 15 cluster (tests/harness/databases.py) and Orthanc 1.10.1 with
Debian's orthanc-postgresql 4.0. The archive (N small synthetic instances, 8x8 pixels) is
uploaded once through Orthanc's REST API into a base database and storage folder; every
round starts from a copy of both (CREATE DATABASE ... TEMPLATE base, storage hard-linked),
so rounds are equal.

- by hand: SIGTERM Orthanc and wait for it to exit, `pg_dump -Fc` of the index database,
  start Orthanc, poll GET /system until the first 200 (the "stop, dump, start" routine);
- the tool: `orchestrator run` with snapshot (the dump staged while the service runs,
  again after the stop only if rows were written since), relocate {database: NEW, to: DIR}
  (the clone after the stop, attachments hard-linked before it), the migrating start
  (upgrade), start-service and health-check. Its downtime is the run report's own
  (stop-service start -> health-check end).

    python3 bench/database_upgrade.py [--instances 20000] [--rounds 3]

Measured 2026-11-28 (2 shared cores, fsync off in the test cluster): 20,000 instances
uploaded in 138 s, a 53.7 MiB index; medians of 3: by hand 3.13 s down, the tool 3.10 s
(ratio 0.99); the tool's dump was staged and still current after the stop.

Prints each round and the medians side by side; asserts nothing. Must run as root (the
cluster runs as `postgres`).
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
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.databases import PG_PLUGIN, PostgresServer  # noqa: E402
from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.world import World  # noqa: E402

PASSWORD = "bench-pw"
STEPS = """  - preflight
  - stop-service: {{timeout: 120}}
  - snapshot
  - relocate: {{database: {new}, to: {to}}}
  - upgrade: {{timeout: 3600, stall: 300}}
  - start-service: {{timeout: 120}}
  - health-check: {{timeout: 300}}
"""


def world(root: Path, pg: PostgresServer, database: str) -> World:
    return World(root, overrides={"Plugins": [str(PG_PLUGIN)],
                                  "PostgreSQL": pg.section(database, "orthanc", PASSWORD)})


def fill(pg: PostgresServer, root: Path, n: int) -> Path:
    """The base database and storage folder with `n` instances; returns the storage folder."""
    pg.sql('CREATE DATABASE bench_base OWNER orthanc;')
    w = world(root / "base", pg, "bench_base").start()
    started = time.monotonic()
    data = make_dataset(n, per_series=50, rows=8, cols=8, seed="bench")

    def post(chunk: list[bytes]) -> None:
        with requests.Session() as s:
            for body in chunk:
                s.post(f"{w.url}/instances", data=body, timeout=60).raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, [data[i::4] for i in range(4)]))
    print(f"filled {n} instances in {time.monotonic() - started:.1f}s "
          f"({w.counts()['CountInstances']} in the index)", flush=True)
    w.stop()
    return w.db


def copy_round(pg: PostgresServer, base_storage: Path, root: Path, name: str) -> World:
    pg.sql(f'CREATE DATABASE "{name}" TEMPLATE bench_base OWNER orthanc;')
    w = world(root / name, pg, name)
    shutil.rmtree(w.db)
    subprocess.run(["cp", "-al", str(base_storage), str(w.db)], check=True)
    return w.start(timeout=300)


def by_hand(pg: PostgresServer, w: World, dump: Path) -> float:
    """SIGTERM, wait, pg_dump -Fc, start, first 200 from /system: the seconds down."""
    procs = w.processes()
    t0 = time.monotonic()
    for p in procs:
        p.send_signal(signal.SIGTERM)
    psutil.wait_procs(procs, timeout=120)
    with tempfile.TemporaryDirectory() as secret:
        passfile = Path(secret) / "pgpass"
        passfile.write_text(f"*:*:*:orthanc:{PASSWORD}\n")
        passfile.chmod(0o600)
        subprocess.run(["pg_dump", "-Fc", "-f", str(dump), "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", "orthanc", "-w", f"--dbname={w.config_dir.parent.name}"],
                       check=True, env={**os.environ, "PGPASSFILE": str(passfile)})
    w.start(timeout=300)
    return time.monotonic() - t0


def by_tool(w: World, name: str) -> tuple[float, float]:
    """(downtime from the run report, wall time of the whole run)."""
    plan = w.plan(STEPS.format(new=f"{name}_next", to=json.dumps(str(w.db.parent / "db-next"))))
    t0 = time.monotonic()
    rc, report, err = w.cli("run", str(plan), timeout=3600)
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"orchestrator run failed ({rc}): {report if isinstance(report, str) else report.get('error')} {err[-500:]}")
    steps = ", ".join(f"{s['id']} {s['seconds']:.2f}" for s in report["steps"]
                      if s.get("seconds") is not None)
    print(f"  tool steps (s): {steps}", flush=True)
    snap = next(s for s in report["steps"] if s["id"] == "snapshot")
    print(f"  snapshot: {snap['detail']}", flush=True)
    return float(report["downtime"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orch-bench-db-"))
    pg = PostgresServer()
    made: list[World] = []
    try:
        pg.start()
        pg.add_role("orthanc", PASSWORD)
        base = fill(pg, root, args.instances)
        size = int(pg.sql("SELECT pg_database_size('bench_base');"))
        print(f"index database: {size / 2**20:.1f} MiB", flush=True)
        hand, tool, walls = [], [], []
        for r in range(args.rounds):
            w = copy_round(pg, base, root, f"hand{r}")
            made.append(w)
            hand.append(by_hand(pg, w, root / f"hand{r}.dump"))
            w.kill_all()
            w = copy_round(pg, base, root, f"tool{r}")
            made.append(w)
            down, wall = by_tool(w, f"tool{r}")
            tool.append(down)
            walls.append(wall)
            w.kill_all()
            print(f"round {r + 1}: by hand {hand[-1]:.2f}s down; tool {down:.2f}s down "
                  f"(run {wall:.2f}s in all)", flush=True)
        mh, mt = statistics.median(hand), statistics.median(tool)
        print(f"\n{args.instances} instances, {size / 2**20:.1f} MiB index, medians of "
              f"{args.rounds}:")
        print(f"  by hand (stop, pg_dump -Fc, start):          {mh:6.2f} s down")
        print(f"  orchestrator (dump staged, clone after stop): {mt:6.2f} s down "
              f"(whole run {statistics.median(walls):.2f} s)")
        print(f"  ratio tool / by hand: {mt / mh:.2f}")
    finally:
        for w in made:
            w.kill_all()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
