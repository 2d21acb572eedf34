"""Helpers for replication tests: run the CLI as a child, read a server's MD5s, hunt secrets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.harness.orthanc import OrthancServer

REPO = Path(__file__).resolve().parents[2]


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ORCHESTRATOR_STATE_DIR", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_argv(*args), env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cli_argv(*args), env=env or child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def md5s(server: OrthancServer) -> dict[str, str]:
    """Instance ID -> stored MD5 of every instance on `server`."""
    out = {}
    with requests.Session() as s:
        s.auth = server.auth
        ids = s.get(f"{server.url}/instances", timeout=60).json()
        for iid in ids:
            r = s.get(f"{server.url}/instances/{iid}/attachments/dicom/md5", timeout=30)
            r.raise_for_status()
            out[iid] = r.text.strip()
    return out


def count(server: OrthancServer) -> int:
    return int(server.statistics()["CountInstances"])


def wait_for_count(server: OrthancServer, at_least: int, proc: subprocess.Popen,
                   timeout: float = 120) -> bool:
    """Poll the target until it holds `at_least` instances; False if `proc` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if count(server) >= at_least:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.01)
    return False


def cmdlines_of(pid: int) -> list[str]:
    """The argv of `pid` and of its descendants, as text (from /proc)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            found.append(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return found


def parse_json(stdout: str) -> dict:
    return json.loads(stdout)


def make_certificate(folder: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1: (PEM with cert + key for Orthanc, cert alone).

    None when the openssl command is missing.
    """
    if shutil.which("openssl") is None:
        return None
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True, timeout=60)
    both = folder / "orthanc.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return both, cert


class TlsProxy:
    """Terminate TLS on a loopback port and forward the bytes to a plain HTTP server.

    Debian's Orthanc 1.10.1 crashes (SIGSEGV) on its first HTTPS connection with
    OpenSSL 3, so HTTPS tests put this in front of a real plain-HTTP Orthanc.
    """

    def __init__(self, backend_port: int, pem: Path):
        self.backend_port = backend_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(pem))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (OSError, ssl.SSLError):
            client.close()  # the client refused our certificate: that is the point
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        threading.Thread(target=_pump, args=(backend, tls), daemon=True).start()
        _pump(tls, backend)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


class ReadOnlyGate:
    """An HTTP front for a real Orthanc that forwards reads and refuses every write.

    GETs are relayed to the Orthanc on `backend_port`; any other method is
    recorded in `writes` and answered 500 (a target that would fail any POST).
    """

    def __init__(self, backend_port: int):
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        gate = self
        self.writes: list[tuple[str, str]] = []
        self.reads = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                gate.reads += 1
                conn = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=30)
                auth = self.headers.get("Authorization")
                conn.request("GET", self.path, headers={"Authorization": auth} if auth else {})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                self._answer(resp.status, body, resp.getheader("Content-Type", "text/plain"))

            def _refuse(self):
                gate.writes.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self._answer(500, b'{"Message": "this gate refuses every write"}',
                             "application/json")

            do_POST = do_PUT = do_DELETE = _refuse  # noqa: N815

            def _answer(self, status, body, content_type):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
