"""A client that keeps storing new instances through the front, and remembers each 200."""

from __future__ import annotations

import hashlib
import threading
import time

import requests

from tests.harness.dicom import make_instance


class WritingClient:
    """Store one new ~4 KB instance every `1/rate` s; `stored` maps ID -> MD5 of each 200."""

    def __init__(self, url: str, *, rate: float = 20.0, patient: int = 9000, size: int = 32):
        self.url, self.period, self.patient, self.size = url, 1.0 / rate, patient, size
        self.stored: dict[str, str] = {}
        self.refused = 0
        self.successes: list[float] = []  # monotonic times of each 200
        self.failures: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> WritingClient:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        n = 0
        with requests.Session() as s:
            while not self._stop.is_set():
                data = make_instance(self.patient, n // 100, (n // 10) % 10, n % 10,
                                     rows=self.size, cols=self.size, seed="bluegreen-client")
                t0 = time.monotonic()
                try:
                    r = s.post(f"{self.url}/instances", data=data, timeout=30)
                    ok = r.status_code == 200
                except requests.RequestException:
                    ok = False
                if ok:
                    self.stored[r.json()["ID"]] = hashlib.md5(data).hexdigest()
                    self.successes.append(time.monotonic())
                    n += 1  # a refused instance is retried: the client's own retry
                else:
                    self.refused += 1
                    self.failures.append(time.monotonic())
                self._stop.wait(max(0.0, self.period - (time.monotonic() - t0)))

    def longest_gap(self) -> float:
        """The longest time between two stores that contains a refused store: the write
        freeze as this client saw it (0 when nothing was refused)."""
        gaps = [b - a for a, b in zip(self.successes, self.successes[1:])
                if any(a < f < b for f in self.failures)]
        return max(gaps, default=0.0)
