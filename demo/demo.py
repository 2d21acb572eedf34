#!/usr/bin/env python3
"""The orchestrator demo: a throwaway Orthanc, inspected, planned, upgraded, and rolled back.

Everything lives in one temp folder that is deleted at the end; the demo's
Orthanc listens on a free loopback port and is stopped by PID. Nothing outside
the temp folder is changed. Run it with `make demo` (it needs Debian's orthanc
package and the tool's test extras, which `make demo` installs).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port  # noqa: E402

TTY = sys.stdout.isatty()
BOLD, DIM, GREEN, RED, CYAN, RESET = (("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[36m", "\033[0m")
                                      if TTY else ("",) * 6)


def banner(n: int, title: str, why: str) -> None:
    print(f"\n{BOLD}{CYAN}── {n}. {title} {'─' * max(2, 60 - len(title))}{RESET}")
    print(f"{DIM}{why}{RESET}")


def orchestrator(*args: str, cwd: Path, expect: int | None = 0) -> int:
    """Run the real CLI, echoing the command line and its output."""
    shown = " ".join(shlex.quote(a) for a in args)
    print(f"{BOLD}$ orchestrator {shown}{RESET}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env,
                          text=True, capture_output=True)
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        print(f"  {line}")
    colour = GREEN if done.returncode == (expect or 0) else RED
    print(f"  {colour}[exit {done.returncode}]{RESET}")
    if expect is not None and done.returncode != expect:
        raise SystemExit(f"demo: expected exit {expect}, got {done.returncode}")
    return done.returncode


class DemoOrthanc:
    """A Debian-like installation in `root`: conf/orthanc.json, lib/db-v6, an Orthanc process."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.db = root / "lib" / "db-v6"
        self.config = root / "conf" / "orthanc.json"
        self.db.mkdir(parents=True)
        self.config.parent.mkdir(parents=True)
        cfg = base_config(root, self.port, Name="demo", StorageDirectory=str(self.db),
                          IndexDirectory=str(self.db))
        text = json.dumps(cfg, indent=2).replace(
            "{\n", "{\n  // Demo Orthanc: loopback only, its own storage. Comments survive a relocate.\n", 1)
        self.config.write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.root / "orthanc.log", "ab") as log:
            subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_up()

    def wait_up(self, timeout: float = 60) -> None:
        import requests
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise SystemExit(f"demo: Orthanc did not start on {self.url}")

    def upload(self, datasets: list[bytes]) -> None:
        import requests
        with requests.Session() as s:
            for data in datasets:
                s.post(f"{self.url}/instances", data=data, timeout=30).raise_for_status()

    def counts(self) -> str:
        import requests
        s = requests.get(f"{self.url}/statistics", timeout=5).json()
        return (f"{s['CountPatients']} patients, {s['CountStudies']} studies, "
                f"{s['CountSeries']} series, {s['CountInstances']} instances")

    def pids(self) -> list[int]:
        """PIDs of the Orthanc processes that run this demo's config (and nothing else)."""
        import psutil
        wanted = str(self.config)
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if cmd and os.path.basename(cmd[0]) == "Orthanc" and wanted in cmd[1:]:
                out.append(proc.pid)
        return out

    def stop(self) -> None:
        import psutil
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        procs = [psutil.Process(p) for p in self.pids() if psutil.pid_exists(p)]
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            p.kill()

    def plan(self, name: str, to: str, health_expect: str = "") -> Path:
        path = self.root / name
        path.write_text(f"""\
# yaml-language-server: $schema={REPO}/orchestrator/data/plan.schema.json
version: 1
state_dir: {json.dumps(str(self.root / 'state'))}
service:
  name: orthanc-demo
  manager: process          # no service manager for a throwaway server: find it by binary + config
  binary: {ORTHANC_BINARY}
  config: {json.dumps(str(self.config))}
  url: {self.url}
  log_file: {json.dumps(str(self.root / 'orthanc-service.log'))}
steps:
  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot                # copy the SQLite index aside (sha256 recorded)
  - relocate: {{to: {json.dumps(str(self.db.parent / to))}}}   # new folder; the old one is the rollback point
  - upgrade: {{timeout: 600, stall: 60}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60{health_expect}}}
""")
        return path


def main() -> int:
    if not os.path.exists(ORTHANC_BINARY):
        print(f"demo: {ORTHANC_BINARY} is missing: apt-get install -y orthanc", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    server = DemoOrthanc(root)
    try:
        print(f"{BOLD}orchestrator demo{RESET}: a throwaway Orthanc in {root}, port {server.port}")
        server.start()
        server.upload(make_dataset(40, per_series=5, rows=64, cols=64))
        print(f"Orthanc {server.url} is up with {server.counts()}.")

        banner(1, "inspect", "What the tool sees: config files, storage and index, schema, binary, hazards.")
        orchestrator("inspect", str(server.config), cwd=root)

        good = server.plan("upgrade.yaml", "db-v6-new")
        banner(2, "validate + plan (dry-run)",
               "The plan is checked, then every step runs against the real host in dry-run mode:\n"
               "reads are real, changes are only listed. Nothing is changed.")
        orchestrator("validate", str(good), cwd=root)
        orchestrator("plan", str(good), cwd=root)

        banner(3, "run", "Stop, snapshot the index, relocate to a new db folder (hard links), --upgrade,\n"
               "start, health check with counts. The old folder stays untouched as the rollback point.")
        orchestrator("run", str(good), cwd=root)
        print(f"Orthanc {server.url} now serves {server.counts()} from {server.db.parent / 'db-v6-new'}.")

        bad = server.plan("bad-health.yaml", "db-v6-try", ", expect: {version: '9.9.9'}")
        banner(4, "a failing run rolls back by itself",
               "Same plan, but the health check expects Orthanc 9.9.9, which is not installed.\n"
               "The tool undoes every step newest-first and brings the old state back (exit 3).")
        orchestrator("run", str(bad), cwd=root, expect=3)
        orchestrator("status", "--state-dir", str(root / "state"), cwd=root, expect=None)
        print(f"Orthanc {server.url} still serves {server.counts()}.")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{GREEN}{BOLD}demo done in {time.monotonic() - t0:.1f}s{RESET}: the temp folder is gone and "
          "no demo process is left.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
