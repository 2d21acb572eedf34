"""OrthancClient over TLS against a loopback HTTPS server with a throwaway self-signed
certificate: verified against its CA bundle, refused without it, accepted unverified."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.errors import OrthancHttpError
from orchestrator.orthanc.rest import OrthancClient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection

    def do_GET(self):  # noqa: N802
        body = json.dumps({"Version": "1.10.1", "Path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def https(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", str(cert)
    httpd.shutdown()
    httpd.server_close()


def test_tls_verified_with_the_ca_bundle_refused_without_it_and_accepted_unverified(https):
    url, ca = https
    with OrthancClient(url, verify=ca) as client:
        assert client.system()["Version"] == "1.10.1"
        assert client.get_json("/again")["Path"] == "/again"  # the same connection, kept alive
    with OrthancClient(url) as client:
        with pytest.raises(OrthancHttpError, match="TLS verification failed") as info:
            client.system()
        assert "--ca-bundle" in info.value.hint
    with OrthancClient(url, verify=False) as client:
        assert client.system()["Version"] == "1.10.1"
