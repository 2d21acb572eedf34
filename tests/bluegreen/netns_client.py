"""A storing client behind a load balancer of its own, as one process, for a client in
another network namespace (`nsenter --net=... python -m tests.bluegreen.netns_client
PORT_FILE OUT_FILE URL`).

The load balancer is a control API on a loopback port (written to PORT_FILE), which a
plan's `command` freeze and switch drive with curl, as they would a real one:
POST /freeze (writes refused), /thaw, /route/PORT (send to 127.0.0.1:PORT, writes
allowed again); GET /stored answers what it got a 200 for so far. A refused write is the client's to retry, as behind a real balancer.
On SIGTERM it writes what it got a 200 for ({instance ID: MD5}) and its refusals to
OUT_FILE as JSON.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.bluegreen.client import WritingClient


class Balanced(WritingClient):
    """A WritingClient whose target and freeze the control API sets."""

    def __init__(self, url: str):
        self.route, self.frozen = url, False
        super().__init__(url)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:1" if self.frozen else self.route  # port 1: refused at once

    @url.setter
    def url(self, value: str) -> None:
        pass


def control(client: Balanced) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path != "/stored":
                self.send_error(404)
                return
            body = json.dumps(dict(client.stored)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802 - http.server's name
            parts = self.path.strip("/").split("/")
            if parts == ["freeze"]:
                client.frozen = True
            elif parts == ["thaw"]:
                client.frozen = False
            elif len(parts) == 2 and parts[0] == "route" and parts[1].isdigit():
                client.route, client.frozen = f"http://127.0.0.1:{parts[1]}", False
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(port_file: str, out_file: str, url: str) -> None:
    client = Balanced(url)
    server = control(client)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    Path(port_file).write_text(str(server.server_address[1]))
    client.start()
    done.wait()
    client.stop()
    server.shutdown()
    Path(out_file).write_text(json.dumps({"stored": client.stored, "refused": client.refused,
                                          "gap": client.longest_gap()}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
