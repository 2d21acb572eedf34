"""OrthancClient and the transfer Endpoint against a tiny loopback HTTP server."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.credentials import Credentials
from orchestrator.orthanc.rest import OrthancClient
from orchestrator.replication.transport import Endpoint

ROUTES = {
    "/system": (200, {"Version": "1.10.1", "DatabaseVersion": 6}),
    "/statistics": (200, {"CountPatients": 1, "CountStudies": 1, "CountSeries": 1,
                          "CountInstances": "7"}),
    "/boom": (500, {"Message": "Internal error", "Details": "disk full"}),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Authorization"),
                                 self.headers.get("Accept-Encoding")))
        if self.headers.get("Authorization") != "Basic dTpzM2NyZXQ=":  # u:s3cret
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="Orthanc"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status, doc = ROUTES.get(self.path, (404, {}))
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.seen = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


GOOD = Credentials("u", "s3cret")


def test_client_reads_system_and_checks_statistics(server):
    _, url = server
    with OrthancClient(url, GOOD) as client:
        assert client.system()["Version"] == "1.10.1"
        with pytest.raises(OrthancHttpError, match="bad CountInstances"):
            client.statistics()
        with pytest.raises(OrthancHttpError) as info:
            client.get_json("/boom")
        assert info.value.status == 500 and info.value.transient and "disk full" in str(info.value)


def test_client_401_hints_at_credentials_and_never_shows_the_password(server):
    _, url = server
    with OrthancClient(url, Credentials("u", "wrong-s3cret")) as client:
        with pytest.raises(OrthancHttpError) as info:
            client.system()
    assert info.value.status == 401 and "credentials" in info.value.hint
    assert "s3cret" not in str(info.value)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_connection_refused_is_transient():
    with OrthancClient(f"http://127.0.0.1:{closed_port()}", timeout=(1, 1)) as client:
        with pytest.raises(OrthancHttpError, match="cannot connect") as info:
            client.system()
    assert info.value.transient


def test_endpoint_sends_identity_and_basic_auth_and_returns_any_status(server):
    httpd, url = server
    endpoint = Endpoint(url, GOOD)
    assert endpoint.get("/system").status == 200
    assert endpoint.get("/boom").status == 500
    assert httpd.seen[0][1:] == ("Basic dTpzM2NyZXQ=", "identity")
    endpoint.close()


def test_endpoint_connection_errors_are_transient_and_name_no_password():
    endpoint = Endpoint(f"http://127.0.0.1:{closed_port()}", Credentials("u", "s3cret"), timeout=(1, 1))
    with pytest.raises(OrthancHttpError) as info:
        endpoint.get("/system")
    assert info.value.transient and "cannot connect" in info.value.message
    assert "s3cret" not in info.value.message and "dTpzM2NyZXQ" not in info.value.message
