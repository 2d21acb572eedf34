"""Start and stop throwaway real Orthanc processes on free loopback ports.

Each server has its own temp config and storage. Servers are stopped by PID
(SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from orchestrator.host.wake import waking  # noqa: F401 - the harness's stops use it too

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")


def free_port() -> int:
    """Return a TCP port that is free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_config(root: Path, port: int, **overrides: Any) -> dict[str, Any]:
    """A safe test config: loopback only, no DICOM server, no plugins, its own storage."""
    cfg: dict[str, Any] = {
        "Name": f"test-{port}",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "WebDavEnabled": False,
        "HttpDescribeErrors": True,
        "StoreMD5ForAttachments": True,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 50,
        "KeepAlive": True,
        "TcpNoDelay": True,
        "SaveJobs": False,
    }
    cfg.update(overrides)
    return cfg


def wait_http(port: int, timeout: float = 60.0, auth: tuple[str, str] | None = None) -> dict:
    """Poll http://127.0.0.1:PORT/system until it answers 200; return its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"http://127.0.0.1:{port}/system", auth=auth, timeout=2)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no Orthanc on port {port} after {timeout:g}s")


@dataclass
class OrthancServer:
    """One throwaway Orthanc: `start()`, use `url`, `stop()`."""

    root: Path
    config_overrides: dict[str, Any] = field(default_factory=dict)
    binary: str = ORTHANC_BINARY
    username: str | None = None
    password: str | None = None
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "config" / "orthanc.json"

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    @property
    def storage(self) -> Path:
        return Path(self.config()["StorageDirectory"])

    @property
    def index_path(self) -> Path:
        return Path(self.config()["IndexDirectory"]) / "index"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username else None

    def config(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text())

    def write_config(self) -> None:
        if not self.port:
            self.port = free_port()
        overrides = dict(self.config_overrides)
        if self.username:
            overrides.setdefault("AuthenticationEnabled", True)
            overrides.setdefault("RegisteredUsers", {self.username: self.password})
        cfg = base_config(self.root, self.port, **overrides)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(cfg, indent=2))

    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Start the process and wait for /system to answer 200."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            self.write_config()
        for attempt in range(3):
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([self.binary, str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
            log.close()
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError:
                self.stop()
                if "address already in use" not in self.log_text().lower() or attempt == 2:
                    raise
                # Another test grabbed the port between free_port() and bind: pick another.
                self.port = free_port()
                self.write_config()
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                r = requests.get(f"{self.url}/system", auth=self.auth, timeout=2)
                if r.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"Orthanc on port {self.port} not ready in {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop our process by PID: SIGTERM, then SIGKILL after `timeout`."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            with waking(self.port):
                proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 5) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-n:])

    # -- data ------------------------------------------------------------------
    def upload(self, datasets: list[bytes]) -> list[str]:
        """POST DICOM files; return the instance IDs."""
        ids = []
        with requests.Session() as s:
            s.auth = self.auth
            for data in datasets:
                r = s.post(f"{self.url}/instances", data=data, timeout=30)
                r.raise_for_status()
                ids.append(r.json()["ID"])
        return ids

    def get(self, path: str, **kw: Any) -> Any:
        r = requests.get(f"{self.url}{path}", auth=self.auth, timeout=30, **kw)
        r.raise_for_status()
        return r.json()

    def statistics(self) -> dict[str, Any]:
        return self.get("/statistics")

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def set_schema_version(index: Path, version: int) -> None:
    """Rewrite GlobalProperties[1] of a stopped Orthanc's SQLite index (test input only)."""
    con = sqlite3.connect(str(index))
    try:
        con.execute("UPDATE GlobalProperties SET value=? WHERE property=1", (str(version),))
        con.commit()
    finally:
        con.close()


def make_schema5_index(root: Path, datasets: list[bytes], **overrides: Any) -> OrthancServer:
    """Fill a fresh Orthanc with `datasets`, stop it, mark its index as schema 5.

    Returns the stopped server (its config, storage and index stay in `root`).
    """
    server = OrthancServer(root, config_overrides=overrides)
    server.start()
    try:
        server.upload(datasets)
    finally:
        server.stop()
    set_schema_version(server.index_path, 5)
    return server
