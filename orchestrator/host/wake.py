"""Hurry a stopping Orthanc's exit by connecting to its HTTP port while it stops.

Orthanc's embedded web server (CivetWeb) notices a stop request only when the
poll on its listening socket returns: every 2 s, or at once when a connection
arrives. So after SIGTERM an idle Orthanc 1.10.1 takes 0.8-2.6 s to exit (median
2.0 s here), and 0.5-0.8 s (median 0.65 s) when something connects to it every
50 ms meanwhile. A connection is opened and closed at once: no request is sent,
nothing is read, and a server already gone just refuses it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EVERY = 0.05  # seconds between two connections


@contextmanager
def waking(port: int | None, host: str = "127.0.0.1", every: float = EVERY) -> Iterator[None]:
    """While the block runs (a stop), connect to `host:port` every `every` seconds.
    `port` None: do nothing (no HTTP server to wake)."""
    if port is None:
        yield
        return
    done = threading.Event()

    def poke() -> None:
        while not done.wait(every):
            try:
                socket.create_connection((host, port), timeout=0.2).close()
            except OSError:
                pass

    thread = threading.Thread(target=poke, name=f"wake-{port}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
