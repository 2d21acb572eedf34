"""Benchmark a blue/green move against an in-place upgrade of the same data.

    python bench/blue_green.py [--instances 20000] [--rate 20] [--rounds 1] [--freeze command]
                               [--switch command|ports]

Each round: an old Orthanc 1.10.1 (run by the process manager) is filled with N small
instances (32x32, ~4 KB), a new empty Orthanc is started, and a client stores one new
instance every 1/rate s through a loopback front (the clients' address, standing in for a
load balancer) during the whole move. `orchestrator run` of a move plan (replicate,
catch-up, freeze, verify-copy, switch) then moves it. With `--switch ports` the new server
is process-managed too and takes the old one's port (the front keeps sending there; the
freeze must then be `stop` or `config`). Printed per round and as medians:

- total: the run's wall time (interpreter start-up included);
- freeze (tool): from the freeze taking effect to the switch being done, as the switch
  step reports it;
- freeze (client): the longest time between two stores of the client that contains a
  refused store: what a writing client actually saw;
- in-place downtime: the same data (a copy of the old server's folder) upgraded in place
  by a stop / relocate / upgrade / start / health-check plan, the engine's downtime figure;
  once as it is (schema 6: nothing to upgrade, the floor of any in-place upgrade) and once
  marked schema 5 (Orthanc's 5 -> 6 procedure over the same data).

Everything runs on loopback on this host; the machine is shared (2 cores), so compare
rows measured side by side, not with other hosts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.bluegreen.conftest import CTL  # noqa: E402
from tests.bluegreen.client import WritingClient  # noqa: E402
from tests.bluegreen.front import Front, write_route  # noqa: E402
from tests.harness.dicom import make_instance  # noqa: E402
from tests.harness.orthanc import OrthancServer, set_schema_version  # noqa: E402
from tests.harness.world import World  # noqa: E402


def fill(url: str, count: int, workers: int = 8) -> float:
    """POST `count` small instances; return the seconds it took."""
    t0 = time.monotonic()

    def batch(start: int) -> None:
        with requests.Session() as s:
            for i in range(start, min(count, start + 500)):
                data = make_instance(i // 400, (i // 100) % 4, (i // 10) % 10, i % 10,
                                     rows=32, cols=32, seed="bench-blue-green")
                s.post(f"{url}/instances", data=data, timeout=60).raise_for_status()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(batch, range(0, count, 500)))
    return time.monotonic() - t0


def ctl(route: Path, *args: str) -> str:
    return json.dumps([sys.executable, CTL, str(route), *args])


def switch_step(switch: str, route: Path, old: World, new) -> str:
    if switch == "ports":
        service = json.dumps({"name": "orthanc-new", "manager": "process",
                              "config": str(new.config),
                              "log_file": str(new.root / "service.log")})
        return f"  - switch: {{how: ports, new_service: {service}}}\n"
    return (f"  - switch: {{how: command, argv: {ctl(route, 'route', str(new.port))}, "
            f"undo: {ctl(route, 'route', str(old.port), 'frozen')}}}\n")


def move_round(root: Path, count: int, rate: float, freeze: str, switch: str) -> dict:
    old = World(root / "old")
    new = World(root / "new") if switch == "ports" else OrthancServer(root / "new")
    front = client = None
    try:
        old.start()
        filled = fill(old.url, count)
        new.start()
        route = root / "route.json"
        write_route(route, old.port, False)
        front = Front(route).start()
        client = WritingClient(front.url, rate=rate).start()
        freeze_step = (f"  - freeze: {{how: command, argv: {ctl(route, 'freeze')}, "
                       f"undo: {ctl(route, 'thaw')}}}\n" if freeze == "command"
                       else f"  - freeze: {{how: {freeze}, timeout: 120}}\n")
        plan = old.plan(f"  - replicate: {{to: {new.url}}}\n"
                        "  - catch-up: {instances: 100, seconds: 5}\n"
                        f"{freeze_step}"
                        "  - verify-copy\n"
                        f"{switch_step(switch, route, old, new)}")
        time.sleep(2.0)  # the client writes before the move too
        t0 = time.monotonic()
        code, report, err = old.cli("run", str(plan), timeout=3600)
        total = time.monotonic() - t0
        time.sleep(2.0)
        client.stop()
        if code != 0:
            raise SystemExit(f"the move failed ({code}): {report} {err[-500:]}")
        steps = {s["id"]: s for s in report["steps"]}
        serving = old.url if switch == "ports" else new.url  # ports: the new one, there
        on_new = set(requests.get(f"{serving}/instances", timeout=60).json())
        lost = [i for i in client.stored if i not in on_new]
        return {"instances": count, "fill_s": filled, "total_s": total,
                "freeze_tool_s": steps["switch"]["facts"]["write_freeze_s"],
                "freeze_action_s": steps["freeze"]["facts"]["action_s"],
                "freeze_client_s": client.longest_gap(), "client_stored": len(client.stored),
                "client_refused": client.refused, "client_lost": len(lost),
                "steps_s": {k: round(v.get("seconds") or 0, 2) for k, v in steps.items()},
                "old_dir": str(old.db)}
    finally:
        if client:
            client.stop()
        if front:
            front.stop()
        old.stop()
        new.stop()


def in_place_round(root: Path, source_db: Path, schema: int) -> dict:
    """Upgrade a copy of the same data in place; the engine's downtime. With `schema` 5 the
    copy's index is marked schema 5, so that --upgrade runs Orthanc's 5 -> 6 procedure over
    it (the in-place upgrade an old site needs)."""
    world = World(root / f"inplace-{schema}")
    shutil.rmtree(world.db)
    shutil.copytree(source_db, world.db)
    if schema != 6:
        # 1.10.1 does not start on a schema 5 index: the site's old binary ran it, and the
        # upgrade begins with that service stopped.
        set_schema_version(world.db / "index", schema)
    try:
        if schema == 6:
            world.start()
        plan = world.plan("  - preflight\n  - stop-service: {timeout: 120}\n"
                          f"  - relocate: {{to: {world.root / 'lib' / 'db-next'}}}\n"
                          "  - upgrade: {timeout: 3600}\n  - start-service: {timeout: 120}\n"
                          "  - health-check: {timeout: 300}\n", name="inplace.yaml")
        t0 = time.monotonic()
        code, report, err = world.cli("run", str(plan), timeout=3600)
        if code != 0:
            raise SystemExit(f"the in-place upgrade failed ({code}): {report} {err[-500:]}")
        return {f"inplace{schema}_total_s": time.monotonic() - t0,
                f"inplace{schema}_downtime_s": report["downtime"]}
    finally:
        world.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--freeze", choices=["command", "stop", "config"], default="command")
    parser.add_argument("--switch", choices=["command", "ports"], default="command")
    parser.add_argument("--schemas", type=int, nargs="*", default=[6],
                        help="in-place upgrades to compare: 6 (no schema change); 5 (5 -> 6) is "
                        "refused by preflight on 1.10.1 (the --upgrade deadlock)")
    args = parser.parse_args()
    if args.switch == "ports" and args.freeze == "command":
        parser.error("--switch ports needs --freeze stop or config (a front frozen by the "
                     "command freeze is never thawed by a ports switch)")
    rows = []
    for n in range(args.rounds):
        root = Path(tempfile.mkdtemp(prefix="bench-bg-"))
        try:
            row = move_round(root, args.instances, args.rate, args.freeze, args.switch)
            print(json.dumps(row), flush=True)
            old_dir = Path(row.pop("old_dir"))
            for schema in args.schemas:
                row.update(in_place_round(root, old_dir, schema))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = ["fill_s", "total_s", "freeze_tool_s", "freeze_client_s"] + \
        [f"inplace{s}_downtime_s" for s in args.schemas]
    med = {k: statistics.median(r[k] for r in rows) for k in keys}
    print(f"\n{args.instances} instances, client at {args.rate:g}/s, freeze by {args.freeze}, "
          f"switch by {args.switch}, "
          f"{len(rows)} round(s), medians:")
    print(f"  move total            {med['total_s']:8.1f} s")
    print(f"  write freeze (tool)   {med['freeze_tool_s']:8.2f} s   (target <= 5 s)")
    print(f"  write freeze (client) {med['freeze_client_s']:8.2f} s")
    for schema in args.schemas:
        what = "no schema change" if schema == 6 else f"schema {schema} -> 6"
        print(f"  in-place downtime     {med[f'inplace{schema}_downtime_s']:8.2f} s   "
              f"(same data, 1.10.1 --upgrade, {what})")
    print(f"  client instances lost {sum(r['client_lost'] for r in rows)}")


if __name__ == "__main__":
    main()
