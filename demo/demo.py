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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.dicom import make_dataset  # noqa: E402
from tests.harness.orthanc import ORTHANC_BINARY  # noqa: E402
from tests.harness.world import World  # noqa: E402

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


STEPS = """\
  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot                # copy the SQLite index aside (sha256 recorded)
  - relocate: {{to: {to}}}   # a new folder; the old one is the rollback point
  - upgrade: {{timeout: 600, stall: 60}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60{expect}}}
"""


class SystemdService:
    """The demo's Orthanc as a runtime systemd unit (/run/systemd/system: gone at reboot, removed at the end)."""

    def __init__(self, world: World):
        self.world = world
        self.name = f"orchestrator-demo-{os.getpid()}"
        self.path = Path("/run/systemd/system") / f"{self.name}.service"

    @staticmethod
    def available() -> bool:
        """True when systemd is the running init and we may add units (root)."""
        return os.path.isdir("/run/systemd/system") and os.geteuid() == 0 and \
            shutil.which("systemctl") is not None

    def systemctl(self, *args: str) -> None:
        subprocess.run(["systemctl", *args], check=False, capture_output=True, timeout=120)

    def start(self) -> None:
        self.path.write_text(f"[Unit]\nDescription=orchestrator demo Orthanc\nDefaultDependencies=no\n\n"
                             f"[Service]\nType=simple\nExecStart={ORTHANC_BINARY} {self.world.config}\n")
        self.systemctl("daemon-reload")
        self.systemctl("start", f"{self.name}.service")
        self.world.wait_up()

    def remove(self) -> None:
        self.systemctl("stop", f"{self.name}.service")
        self.path.unlink(missing_ok=True)
        self.systemctl("daemon-reload")
        self.systemctl("reset-failed", f"{self.name}.service")


def plan(world: World, name: str, to: str, service: str, manager: str, expect: str = "") -> Path:
    """The demo's plan: the steps of an upgrade with relocation, for its service and manager."""
    return world.plan(STEPS.format(to=json.dumps(str(world.db.parent / to)), expect=expect),
                      name=name, service_name=service, manager=manager)


def counts(world: World) -> str:
    c = world.counts()
    return (f"{c['CountPatients']} patients, {c['CountStudies']} studies, "
            f"{c['CountSeries']} series, {c['CountInstances']} instances")


def main() -> int:
    if not os.path.exists(ORTHANC_BINARY):
        print(f"demo: {ORTHANC_BINARY} is missing: apt-get install -y orthanc", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="orchestrator-demo-"))
    server = World(root / "orthanc")
    unit = SystemdService(server) if SystemdService.available() else None
    service, manager = (unit.name, "systemd") if unit else ("orthanc-demo", "process")
    try:
        print(f"{BOLD}orchestrator demo{RESET}: a throwaway Orthanc in {root}, port {server.port}")
        if unit:
            print(f"Service manager: systemd (unit {unit.name}.service, a runtime unit removed at the end).")
            unit.start()
        else:
            print("Service manager: none running here (systemd is not PID 1), so the tool's process "
                  "manager\ndrives the Orthanc process directly (found by binary + config, SIGTERM to stop).")
            server.start()
        server.upload(make_dataset(40, per_series=5, rows=64, cols=64))
        print(f"Orthanc {server.url} is up with {counts(server)}.")

        banner(1, "inspect", "What the tool sees: config files, storage and index, schema, binary, hazards.")
        orchestrator("inspect", str(server.config), cwd=root)

        good = plan(server, "upgrade.yaml", "db-v6-new", service, manager)
        banner(2, "validate + plan (dry-run)",
               "The plan is checked, then every step runs against the real host in dry-run mode:\n"
               "reads are real, changes are only listed. Nothing is changed.")
        orchestrator("validate", str(good), cwd=root)
        orchestrator("plan", str(good), cwd=root)

        banner(3, "run", "Stop, snapshot the index, relocate to a new db folder (hard links), --upgrade,\n"
               "start, health check with counts. The old folder stays untouched as the rollback point.")
        orchestrator("run", str(good), cwd=root)
        print(f"Orthanc {server.url} now serves {counts(server)} from {server.db.parent / 'db-v6-new'}.")

        bad = plan(server, "bad-health.yaml", "db-v6-try", service, manager,
                   ", expect: {database_version: 99}")
        banner(4, "a failing run rolls back by itself",
               "Same plan, but the health check expects DatabaseVersion 99, which no Orthanc has.\n"
               "The tool undoes every step newest-first and brings the old state back (exit 3).")
        orchestrator("run", str(bad), cwd=root, expect=3)
        orchestrator("status", "--state-dir", str(server.state), cwd=root, expect=None)
        print(f"Orthanc {server.url} still serves {counts(server)}.")
    finally:
        if unit:
            unit.remove()
        server.stop()
        server.kill_all()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{GREEN}{BOLD}demo done in {time.monotonic() - t0:.1f}s{RESET}: the temp folder is gone and "
          "no demo process is left.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
