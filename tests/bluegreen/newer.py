"""A newer Orthanc (1.12.7, Debian 13's) as a loopback process: the binary of the cached trixie
test image (tests/harness/debian_host.py), run chrooted into that image's extracted root in a
private mount namespace, with its own folder bound on /mnt (the image is never written).

It shares the host's network namespace, so it listens on a free loopback port beside the
1.10.1 processes: a move between two versions without booting containers. Skips when the
image has not been built on this machine.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import requests

from tests.harness.debian_host import IMAGE_DIR
from tests.harness.orthanc import base_config, free_port, wait_http


def trixie_root() -> Path | None:
    found = sorted(IMAGE_DIR.glob("trixie-*.root"))
    return found[-1] if found and (found[-1] / "usr/sbin/Orthanc").exists() else None


class ChrootOrthanc:
    def __init__(self, root: Path, image: Path):
        self.root, self.image = root, image
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ChrootOrthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = base_config(Path("/mnt"), self.port)
        (self.root / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        im = self.image
        script = (f"mount --bind {self.root} {im}/mnt && mount --bind /dev {im}/dev && "
                  f"mount --bind /proc {im}/proc && exec chroot {im} /usr/sbin/Orthanc "
                  "/mnt/orthanc.json")
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        wait_http(self.port, 60)
        return self

    def version(self) -> str:
        return requests.get(f"{self.url}/system", timeout=10).json()["Version"]

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
