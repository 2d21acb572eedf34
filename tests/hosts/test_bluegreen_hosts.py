"""Blue/green between two real Debian hosts: Debian 12's stock Orthanc 1.10.1 (orthanc.service
under systemd) moved to Debian 13's 1.12.7 in a second container, both booted with
systemd-nspawn in one network namespace, each on its own port. The tool runs on the old
host as an admin would. A client in that namespace stores all along, through a load
balancer the plan's freeze and switch drive with curl; every instance it got a 200 for is
on the new server at the end, with its MD5, then back on the old one after `revert`.

Why a balancer and not `freeze: {how: stop}` here: under a steady 20 stores/s, Orthanc
1.10.1 does not exit after SIGTERM at all (measured: still storing 60 s later, with and
without keep-alive), and Debian's unit waits 600 s (TimeoutSec) before SIGKILL. The stop
way is tested with the process manager, whose stop_grace ends it (tests/bluegreen)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hosts.conftest import WHEELS_INSIDE

REPO = Path(__file__).resolve().parents[2]
TOOL = "/opt/orchestrator/bin/orchestrator"
PLAN = """version: 1
state_dir: /var/lib/orchestrator
service: {{name: orthanc, manager: systemd, binary: /usr/sbin/Orthanc, config: /etc/orthanc/,
          url: "http://127.0.0.1:8042"}}
steps:
  - replicate: {{to: "http://127.0.0.1:8043", workers: 4}}
  - catch-up: {{instances: 30, seconds: 2}}
  - freeze: {{how: command, argv: {freeze}, undo: {thaw}}}
  - verify-copy
  - switch: {{how: command, argv: {route_new}, undo: {route_old}}}
"""


def lb(port: int, what: str) -> str:
    return json.dumps(["curl", "-sSf", "-X", "POST", f"http://127.0.0.1:{port}/{what}"])


# Bring `lo` up (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP) from Python.
LO_UP = ("import fcntl, socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "f = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH', b'lo', 0)))[1]; "
         "fcntl.ioctl(s, 0x8914, struct.pack('16sH', b'lo', f | 1))")
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"


class Netns:
    """A network namespace of our own, held by one `sleep` we started (killed by PID)."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "--net", "--", "sleep", "infinity"],
                                       start_new_session=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise AssertionError("unshare --net did not take effect")
            time.sleep(0.01)
        self.path = Path(f"/proc/{self.holder.pid}/ns/net")
        self.enter([sys.executable, "-c", LO_UP])  # no iproute2 needed

    def enter(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={self.path}", *argv], check=True,
                              capture_output=True, text=True, timeout=30, **kw)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


@pytest.fixture
def netns():
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


class Client:
    """tests/bluegreen/netns_client.py in the namespace: a client storing through its load
    balancer, whose control port the plan drives; `stop` reads what it stored."""

    def __init__(self, netns: Netns, folder: Path, url: str):
        port_file, self.out = folder / "lb-port", folder / "client.json"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns.path}", sys.executable, "-m",
             "tests.bluegreen.netns_client", str(port_file), str(self.out), url],
            cwd=REPO, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            assert time.monotonic() < deadline and self.proc.poll() is None, "no client"
            time.sleep(0.05)
        self.port = int(port_file.read_text())

    def stored(self, netns: Netns) -> dict[str, str]:
        """What the client got a 200 for so far."""
        return json.loads(netns.enter([sys.executable, "-c", FETCH,
                                       f"http://127.0.0.1:{self.port}/stored"]).stdout)

    def plan(self) -> str:
        return PLAN.format(freeze=lb(self.port, "freeze"), thaw=lb(self.port, "thaw"),
                           route_new=lb(self.port, "route/8043"),
                           route_old=lb(self.port, "route/8042"))

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        return json.loads(self.out.read_text())


def md5s(host, port: int) -> dict[str, str]:
    ids = json.loads(host.http("/instances", port=port))
    return {i: host.http(f"/instances/{i}/attachments/dicom/md5", port=port) for i in ids}


def store_some(host, count: int) -> None:
    for n in range(count):
        body = json.dumps({"Tags": {"PatientID": f"BG-{n % 5}", "PatientName": "BLUE^GREEN",
                                    "StudyDescription": f"study {n % 7}"}})
        host.http("/tools/create-dicom", method="POST", data=body)


def test_move_from_debian_12_to_debian_13_in_one_network_namespace_then_revert(
        bookworm_image, trixie_image, wheels, host_factory, netns, tmp_path):
    # The new host first, alone on 8042; then moved to 8043/4243, leaving 8042 to the old one.
    new = host_factory(trixie_image, name="bg-new", network=netns.path)
    new.wait_http()
    new.run("sed -i -e 's/\"HttpPort\" *: *8042/\"HttpPort\" : 8043/' "
            "-e 's/\"DicomPort\" *: *4242/\"DicomPort\" : 4243/' /etc/orthanc/orthanc.json && "
            "systemctl restart orthanc")
    old = host_factory(bookworm_image, wheels, name="bg-old", network=netns.path)
    old.install_tool(WHEELS_INSIDE)
    assert old.wait_http()["Version"] == "1.10.1"
    assert json.loads(new.http("/system", port=8043))["Version"] == "1.12.7"
    store_some(old, 40)
    before = md5s(old, 8042)
    client = Client(netns, tmp_path, "http://127.0.0.1:8042")
    try:
        time.sleep(1.0)
        old.path("/root/move.yaml").write_text(client.plan())
        done = old.exec([TOOL, "run", "/root/move.yaml", "--json"], check=False, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        report = json.loads(done.stdout)
        steps = {s["id"]: s for s in report["steps"]}
        assert steps["verify-copy"]["facts"]["comparison"]["ok"]
        assert steps["switch"]["facts"]["write_freeze_s"] > 0
        time.sleep(1.0)  # the client stores on the new server now
        stored_now = client.stored(netns)
        there = md5s(new, 8043)
        arrived = set(there) - set(before)
        # Every instance the old server had and every 200 so far: on the new one, same MD5.
        assert all(there.get(i) == md5 for i, md5 in {**before, **stored_now}.items())

        # A day later: revert, from the old host (clients back, what arrived carried back).
        done = old.exec([TOOL, "revert", "/root/move.yaml"], check=False, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        time.sleep(1.0)  # the client stores on the old server again
    finally:
        seen = client.stop()
    stored = seen["stored"]
    assert stored, "the client stored nothing"  # (a freeze under 50 ms may refuse none)
    back = md5s(old, 8042)
    assert all(back.get(i) == md5 for i, md5 in stored.items())  # every 200, its MD5
    assert arrived and all(back.get(i) == there[i] for i in arrived)
    assert old.wait_http()["Version"] == "1.10.1"
