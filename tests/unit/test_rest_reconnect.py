"""OrthancClient reopens its keep-alive connection once when the server closed it while idle."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.orthanc.rest import OrthancClient


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # no "Connection: close": the client keeps it open

    def do_GET(self):  # noqa: N802
        self.server.connections.add(self.client_address)
        body = json.dumps({"Version": "1.10.1"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True  # then drop it, as an idle timeout would

    def log_message(self, *args):
        pass


def test_a_connection_closed_while_idle_is_reopened_once():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.connections = set()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with OrthancClient(f"http://127.0.0.1:{httpd.server_address[1]}") as client:
            for _ in range(3):
                assert client.system()["Version"] == "1.10.1"
        assert len(httpd.connections) == 3  # each call after the first found it closed
    finally:
        httpd.shutdown()
        httpd.server_close()
