"""A throwaway Orthanc "installation" for end-to-end runs of the orchestrator CLI.

Used by the integration tests, the demo and the benchmarks.

`World` lays out a Debian-like installation in a temp folder: a config (a file
or a folder of *.json), a `db-v6` database folder, a state folder, and an
Orthanc process started with that config (the process manager finds it by
binary + config). Tests write plans against it and run `python -m
orchestrator ...` as a child process, so exit codes, output and kill -9 are
the real ones. Teardown kills, by PID, every process of this config.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.harness.orthanc import ORTHANC_BINARY, base_config, free_port, set_schema_version, waking

REPO = Path(__file__).resolve().parents[2]


# The full upgrade (snapshot, relocate, --upgrade) as plan steps; format with `to=` (JSON).
UPGRADE_STEPS = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {to}}}
  - upgrade: {{timeout: 120, stall: 20}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60}}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root` (folders as 'dir')."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root) + "/"] = "dir"
        for f in filenames:
            out[os.path.relpath(os.path.join(dirpath, f), root)] = sha256(Path(dirpath) / f)
    return out


class World:
    """One Orthanc installation under `root`, driven through the real CLI."""

    def __init__(self, root: Path, *, folder_config: bool = False, auth: tuple[str, str] | None = None,
                 overrides: dict | None = None):
        self.root = Path(root)
        self.port = free_port()
        self.db = self.root / "lib" / "db-v6"
        self.state = self.root / "state"
        self.config_dir = self.root / "conf"
        self.config = self.config_dir if folder_config else self.config_dir / "orthanc.json"
        self.log = self.root / "orthanc.log"
        self.auth = auth
        self.db.mkdir(parents=True)
        self.config_dir.mkdir(parents=True)
        cfg = base_config(self.root, self.port, StorageDirectory=str(self.db),
                          IndexDirectory=str(self.db), **(overrides or {}))
        if auth:
            cfg.update(AuthenticationEnabled=True, RegisteredUsers={auth[0]: auth[1]})
        text = json.dumps(cfg, indent=2)
        # A comment, as in Debian's files: a rewrite must keep it.
        text = text.replace("{\n", "{\n  // written by the test world\n", 1)
        (self.config_dir / "orthanc.json").write_text(text)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the service ------------------------------------------------------------
    def start(self, timeout: float = 60) -> World:
        with open(self.log, "ab") as log:
            subprocess.Popen([ORTHANC_BINARY, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_up(timeout)
        return self

    def wait_up(self, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                r = requests.get(f"{self.url}/system", auth=self.auth, timeout=2)
                if r.status_code == 200:
                    return r.json()
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError(f"no Orthanc on {self.url}: {self.log.read_text()[-500:]}")

    def get(self, path: str) -> Any:
        r = requests.get(f"{self.url}{path}", auth=self.auth, timeout=10)
        r.raise_for_status()
        return r.json()

    def counts(self) -> dict:
        s = self.get("/statistics")
        return {k: s[k] for k in ("CountPatients", "CountStudies", "CountSeries", "CountInstances")}

    def upload(self, datasets: list[bytes]) -> None:
        with requests.Session() as s:
            s.auth = self.auth
            for data in datasets:
                s.post(f"{self.url}/instances", data=data, timeout=30).raise_for_status()

    def processes(self) -> list[psutil.Process]:
        """Live processes of the Orthanc binary naming this world's config."""
        wanted = os.path.realpath(self.config)
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmd = proc.info["cmdline"] or []
            if proc.info["status"] == psutil.STATUS_ZOMBIE or not cmd:
                continue
            if os.path.basename(cmd[0]) == os.path.basename(ORTHANC_BINARY) and \
                    any(os.path.realpath(a) == wanted for a in cmd[1:] if not a.startswith("-")):
                found.append(proc)
        return found

    def upgrade_processes(self) -> list[psutil.Process]:
        return [p for p in self.processes() if "--upgrade" in (p.info["cmdline"] or [])]

    def stop(self) -> None:
        for proc in self.processes():
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        with waking(self.port):
            psutil.wait_procs(self.processes(), timeout=30)

    def kill_all(self) -> None:
        for proc in self.processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(self.processes(), timeout=10)

    # -- schema-5 data for the deadlock ----------------------------------------------
    def make_schema5_copy(self, name: str = "db-v5") -> Path:
        """Copy this (stopped) world's database folder aside and mark its index schema 5."""
        import shutil

        target = self.db.parent / name
        shutil.copytree(self.db, target)
        set_schema_version(target / "index", 5)
        return target

    # -- plans and the CLI ------------------------------------------------------------
    def plan(self, steps: str, *, name: str = "plan.yaml", service_extra: str = "",
             service_name: str = "orthanc-e2e", manager: str = "process") -> Path:
        text = (f"# yaml-language-server: $schema=../orchestrator/data/plan.schema.json\n"
                f"version: 1\n"
                f"state_dir: {json.dumps(str(self.state))}\n"
                f"service:\n"
                f"  name: {service_name}\n"
                f"  manager: {manager}\n"
                f"  binary: {ORTHANC_BINARY}\n"
                f"  config: {json.dumps(str(self.config))}\n"
                f"  url: {self.url}\n"
                f"  log_file: {json.dumps(str(self.root / 'service.log'))}\n"
                f"{service_extra}"
                f"steps:\n{steps}")
        path = self.root / name
        path.write_text(text)
        return path

    def cli(self, *args: str, env: dict | None = None, timeout: float = 300,
            json_out: bool = True) -> tuple[int, Any, str]:
        """Run the CLI; return (exit code, parsed --json document or stdout, stderr)."""
        full_env = dict(os.environ)
        full_env.pop("ORCHESTRATOR_TEST_CRASH_AT", None)
        full_env.update(env or {})
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        argv = [sys.executable, "-m", "orchestrator", *args] + (["--json"] if json_out else [])
        # No poking from here: the tool's own stops wake Orthanc (orchestrator/host/wake.py).
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=full_env, cwd=self.root)
        out: Any = done.stdout
        if json_out and done.stdout.strip().startswith("{"):
            out = json.loads(done.stdout)
        return done.returncode, out, done.stderr
