"""A tiny loopback HTTP front for blue/green tests: the clients' single address.

It stands in for the admin's load balancer. Its route lives in a JSON file
(`{"port": N, "frozen": bool}`) that `front_ctl.py` rewrites, so the plan's
`freeze` and `switch` commands are real commands run by the tool. While
frozen, every POST is refused with 503 (reads pass). `fail_rate` makes it a
flaky target instead: that share of POST /instances answers 500 before
reaching the backend.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.harness.orthanc import free_port


def write_route(path: Path, port: int, frozen: bool) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "frozen": frozen}))
    tmp.replace(path)


def read_route(path: Path) -> dict:
    return json.loads(path.read_text())


class Front:
    """Forward to the route's port; `start()` / `stop()`."""

    def __init__(self, route: Path, *, fail_rate: float = 0.0, seed: int = 13):
        self.route, self.fail_rate = route, fail_rate
        self.port = free_port()
        self.rng = random.Random(seed)
        self.failed = 0
        self.lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                route = read_route(front.route)
                if self.command == "POST" and route["frozen"]:
                    return self._answer(503, b'{"Message": "frozen"}')
                if self.command == "POST" and self.path.startswith("/instances") and \
                        front._fail():
                    return self._answer(500, b'{"Message": "injected failure"}')
                conn = http.client.HTTPConnection("127.0.0.1", route["port"], timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("host", "connection", "accept-encoding")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    reply = conn.getresponse()
                    data = reply.read()
                    self._answer(reply.status, data, reply.getheader("Content-Type"))
                except OSError:
                    self._answer(502, b'{"Message": "backend down"}')
                finally:
                    conn.close()

            def _answer(self, status, data, ctype="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _fail(self) -> bool:
        with self.lock:
            hit = self.rng.random() < self.fail_rate
            self.failed += hit
            return hit

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Front:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
