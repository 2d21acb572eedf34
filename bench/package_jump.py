#!/usr/bin/env python3
"""Benchmark: downtime of a real Orthanc 1.10.1 -> 1.12.7 package jump in a Debian 12 host.

Every round boots a fresh host (tests/harness/debian_host.py, image cached per machine),
stores a few instances, starts a prober *inside* the host (GET /system every 20 ms; the
downtime is the last 200 before the first failure to the first 200 after), then runs one
method:

- by hand: a policy-rc.d that exits 101 (written before, as an admin would), then
  `systemctl stop orthanc`; `apt-get install -y -t trixie orthanc=1.12.7+dfsg-4` (the
  .debs are already in the apt cache, as after a download ahead); `systemctl start orthanc`;
  poll /system until it answers.

- tool: `orchestrator run` of a plan with snapshot, relocate and the package step (the tool
  installed in the host from wheels of this checkout before the round's clock starts): the
  stage steps download and link before the stop; after it, the index copy, the
  /etc/orthanc copy, the install (restart held back) and the health check.

    python3 bench/package_jump.py [--rounds 3]

Rounds alternate between the methods (the machine's load drifts alike for both). Prints
figures and medians; asserts nothing (target: the tool's downtime <= by hand's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.debian_host import (BOOKWORM, VERSIONS, DebianHost,  # noqa: E402
                                      build_wheels, ensure_image)

NEW = VERSIONS["trixie"]
PROBER = r"""
import json, sys, time, urllib.request
ok_before = first_fail = ok_after = None
stop_at = time.monotonic() + float(sys.argv[1])
while time.monotonic() < stop_at:
    t = time.time()
    try:
        urllib.request.urlopen("http://127.0.0.1:8042/system", timeout=1).read()
        up = True
    except Exception:
        up = False
    if up and first_fail is None:
        ok_before = t
    elif not up and first_fail is None:
        first_fail = t
    elif up and first_fail is not None:
        ok_after = t
        break
    time.sleep(0.02)
json.dump({"ok_before": ok_before, "first_fail": first_fail, "ok_after": ok_after},
          open("/root/prober.json", "w"))
"""
BY_HAND = f"""
set -e
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
t0=$(date +%s.%N)
systemctl stop orthanc
t1=$(date +%s.%N)
DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t trixie orthanc={NEW} > /root/apt.log 2>&1
t2=$(date +%s.%N)
systemctl start orthanc
until curl -sf http://127.0.0.1:8042/system > /dev/null; do sleep 0.02; done
t3=$(date +%s.%N)
rm /usr/sbin/policy-rc.d
echo "$t0 $t1 $t2 $t3"
"""


def by_hand(host: DebianHost) -> dict[str, float]:
    """The admin's jump: stop, apt-get install with the restart held back, start."""
    t0, t1, t2, t3 = map(float, host.run(BY_HAND, timeout=600).stdout.split())
    return {"stop": t1 - t0, "install": t2 - t1, "start": t3 - t2, "stop_to_up": t3 - t0}


PLAN = f"""version: 1
state_dir: /var/lib/orchestrator
service:
  name: orthanc
  manager: systemd
  binary: /usr/sbin/Orthanc
  config: /etc/orthanc/
  user: orthanc
  url: http://127.0.0.1:8042
steps:
  - preflight
  - stop-service: {{timeout: 120}}
  - snapshot
  - relocate: {{to: /var/lib/orthanc/db-v6-next}}
  - package: {{name: orthanc, version: "{NEW}", release: trixie}}
  - start-service: {{timeout: 120}}
  - health-check: {{timeout: 120}}
"""
WHEELS_INSIDE = "/mnt/wh"


def tool(host: DebianHost) -> dict[str, float]:
    """The tool's jump: one `orchestrator run` (stage steps before the stop)."""
    host.path("/root/jump.yaml").write_text(PLAN)
    t0 = time.time()
    done = host.exec(["/opt/orchestrator/bin/orchestrator", "run", "--json", "/root/jump.yaml"],
                     timeout=900, check=False)
    total = time.time() - t0
    report = json.loads(done.stdout)
    assert done.returncode == 0, (report.get("error"), report.get("hint"))
    steps = {s["id"]: s for s in report["steps"]}
    return {"run": total, "stage": sum(steps[i]["seconds"] or 0 for i in steps if "stage" in i),
            "install": steps["package"]["seconds"], "reported_downtime": report["downtime"]}


METHODS: dict[str, Callable[[DebianHost], dict[str, float]]] = {"by hand": by_hand, "tool": tool}


def seed(host: DebianHost, n: int) -> None:
    for i in range(n):
        host.http("/tools/create-dicom", method="POST",
                  data=json.dumps({"Tags": {"PatientID": f"P{i % 5}", "StudyDescription": f"S{i}"}}))


def one_round(image: Path, method: Callable[[DebianHost], dict[str, float]], n: int,
              wheels: Path) -> dict:
    with DebianHost(image, name="bench", binds={wheels: WHEELS_INSIDE}) as host:
        host.wait_http()
        if method is tool:
            host.install_tool(WHEELS_INSIDE)
        boot = host.timings["boot"]
        seed(host, n)
        before = json.loads(host.http("/statistics"))["CountInstances"]
        host.run("nohup python3 -c '" + PROBER.replace("'", "'\\''") + "' 900 "
                 "> /dev/null 2>&1 & sleep 0.5")
        figures = method(host)
        for _ in range(100):
            if host.path("/root/prober.json").exists():
                break
            time.sleep(0.1)
        probe = json.loads(host.path("/root/prober.json").read_text())
        figures["downtime"] = probe["ok_after"] - probe["ok_before"]
        system = json.loads(host.http("/system"))
        after = json.loads(host.http("/statistics"))["CountInstances"]
        assert system["Version"] == "1.12.7" and after == before, (system["Version"], before, after)
        figures["boot"] = boot
        return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--instances", type=int, default=20)
    args = ap.parse_args()
    t = time.monotonic()
    image = ensure_image(BOOKWORM, log=print)
    print(f"image ready in {time.monotonic() - t:.1f}s: {image}")
    wheels = build_wheels(REPO, Path(tempfile.mkdtemp(prefix="bench-wheels-")) / "py311")
    rounds: dict[str, list[dict]] = {name: [] for name in METHODS}
    for r in range(args.rounds):  # interleaved: the machine's load drifts alike for both
        for name, method in METHODS.items():
            fig = one_round(image, method, args.instances, wheels)
            rounds[name].append(fig)
            print(f"{name:8} round {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in fig.items()),
                  flush=True)
    medians = {}
    for name, figs in rounds.items():
        medians[name] = {k: statistics.median(f[k] for f in figs) for k in figs[0]}
        print(f"{name:8} median : " + ", ".join(f"{k} {v:.2f}s" for k, v in medians[name].items()))
    if "tool" in medians:
        ratio = medians["tool"]["downtime"] / medians["by hand"]["downtime"]
        print(f"tool / by hand downtime: {ratio:.2f} (target <= 1.00)")


if __name__ == "__main__":
    main()
