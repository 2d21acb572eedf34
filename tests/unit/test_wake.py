"""host/wake: a stop pokes the service's HTTP port while it runs, and only then."""

from __future__ import annotations

import socket
import threading
import time

from orchestrator.host.changes import Changes
from orchestrator.host.service import ServicePort
from orchestrator.host.wake import waking
from orchestrator.services.base import ServiceStatus, State


class Listener:
    """A loopback listener counting the connections it accepts."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self.sock.settimeout(0.05)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()
            self.count += 1

    def close(self) -> int:
        self.done.set()
        self.thread.join()
        self.sock.close()
        return self.count


class Manager:
    kind = "process"
    target = type("T", (), {"name": "orthanc"})()

    def __init__(self, seconds: float):
        self.seconds = seconds

    def status(self):
        return ServiceStatus(State.RUNNING, 1, "PID 1")

    def stop(self, *, timeout):
        time.sleep(self.seconds)

    def start(self, *, timeout):
        time.sleep(self.seconds)

    def stop_commands(self):
        return [["kill", "1"]]

    def start_commands(self):
        return [["orthanc"]]


def test_waking_connects_while_the_block_runs_and_stops_after():
    lis = Listener()
    with waking(lis.port, every=0.01):
        deadline = time.monotonic() + 5
        while lis.count < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    after = lis.count
    time.sleep(0.1)
    assert after >= 3 and lis.close() == after  # nothing once the block ended


def test_nothing_listening_and_no_port_are_fine():
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with waking(port, every=0.01):
        time.sleep(0.05)
    with waking(None):
        pass


def test_the_service_port_pokes_during_a_real_stop_only():
    lis = Listener()
    real = ServicePort(Manager(0.3), Changes(), http_port=lis.port)
    real.start(timeout=5)
    assert lis.count == 0  # a start is not poked
    real.stop(timeout=5)
    assert lis.count >= 1
    stopped = lis.count
    dry = ServicePort(Manager(0.3), Changes(dry=True), http_port=lis.port)
    dry.stop(timeout=5)
    assert lis.close() == stopped  # a dry stop neither acts nor pokes
