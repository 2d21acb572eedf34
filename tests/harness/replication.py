"""Helpers for replication tests: run the CLI as a child, read a server's MD5s, hunt secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.harness.orthanc import OrthancServer

REPO = Path(__file__).resolve().parents[2]


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ORCHESTRATOR_STATE_DIR", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cli_argv(*args), env=env or child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def md5s(server: OrthancServer) -> dict[str, str]:
    """Instance ID -> stored MD5 of every instance on `server`."""
    out = {}
    with requests.Session() as s:
        s.auth = server.auth
        ids = s.get(f"{server.url}/instances", timeout=60).json()
        for iid in ids:
            r = s.get(f"{server.url}/instances/{iid}/attachments/dicom/md5", timeout=30)
            r.raise_for_status()
            out[iid] = r.text.strip()
    return out


def count(server: OrthancServer) -> int:
    return int(server.statistics()["CountInstances"])


def wait_for_count(server: OrthancServer, at_least: int, proc: subprocess.Popen,
                   timeout: float = 120) -> bool:
    """Poll the target until it holds `at_least` instances; False if `proc` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if count(server) >= at_least:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.01)
    return False


def cmdlines_of(pid: int) -> list[str]:
    """The argv of `pid` and of its descendants, as text (from /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            found.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def parse_json(stdout: str) -> dict:
    return json.loads(stdout)
