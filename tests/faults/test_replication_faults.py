"""Bad answers: a lying source on loopback (401, 404, non-DICOM, another instance, 500), a
target that dies mid-run. Each instance gets a clear error, the run goes on, the exit code says so."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest

from orchestrator.replication.outcome import CopyOutcome
from orchestrator.replication.pool import RetryPolicy
from orchestrator.replication.options import Options, PresenceMode
from orchestrator.replication.replicate import Replication
from orchestrator.replication.state import StateStore
from orchestrator.replication.transport import Endpoint
from orchestrator.replication.writes import Writes
from tests.harness.dicom import make_dataset, make_instance
from tests.harness.replication import child_env, md5s, parse_json, run_cli

pytestmark = pytest.mark.orthanc


def orthanc_id(data: bytes) -> str:
    ds = pydicom.dcmread(io.BytesIO(data))
    key = "|".join([ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID])
    digest = hashlib.sha1(key.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


GOOD = make_instance(3, 0, 0, 0, rows=16, cols=16)
OTHER = make_instance(3, 0, 0, 1, rows=16, cols=16)
GOOD_ID, OTHER_ID = orthanc_id(GOOD), orthanc_id(OTHER)
FAKE = {  # instance ID -> (status of /file, body, status of /instances/{id})
    "00000000-00000000-00000000-00000000-0000000b": (404, b"", 404),  # deleted meanwhile
    "00000000-00000000-00000000-00000000-0000000c": (404, b"", 200),  # listed, file lost
    "00000000-00000000-00000000-00000000-0000000d": (401, b"", 200),
    "00000000-00000000-00000000-00000000-0000000e": (200, b"<html>not DICOM</html>", 200),
    OTHER_ID: (200, GOOD, 200),  # says OTHER, sends GOOD's bytes... which the target then has
    "00000000-00000000-00000000-00000000-0000000f": (500, b'{"Message": "boom"}', 200),
}
ORDER = [GOOD_ID, *FAKE]


class LyingSource(BaseHTTPRequestHandler):
    def reply(self, status, body=b"", ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        path = self.path
        if path == "/system":
            return self.reply(200, b'{"Version": "1.10.1", "DatabaseVersion": 6}')
        if path == "/statistics":
            return self.reply(200, json.dumps({"CountInstances": len(ORDER)}).encode())
        if path == "/changes?last":
            return self.reply(200, json.dumps({"Last": len(ORDER)}).encode())
        if path.startswith("/changes?since=0"):
            changes = [{"Seq": n + 1, "ChangeType": "NewInstance", "ID": iid}
                       for n, iid in enumerate(ORDER)]
            return self.reply(200, json.dumps({"Changes": changes, "Done": True,
                                               "Last": len(ORDER)}).encode())
        if path.startswith("/changes"):
            return self.reply(200, json.dumps({"Changes": [], "Done": True,
                                               "Last": len(ORDER)}).encode())
        parts = path.strip("/").split("/")
        if parts[0] == "instances" and len(parts) >= 2:
            iid = parts[1]
            if iid == GOOD_ID:
                return self.reply(200, GOOD if path.endswith("/file") else b"{}",
                                  "application/dicom")
            if iid in FAKE:
                file_status, body, status = FAKE[iid]
                if path.endswith("/file"):
                    return self.reply(file_status, body, "application/dicom")
                return self.reply(status, b"{}")
        return self.reply(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def lying_source():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), LyingSource)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_lying_source_gets_clear_errors_per_instance(lying_source, orthanc_factory, tmp_path):
    target = orthanc_factory()
    # One worker: OTHER_ID's lie stores GOOD's bytes, so GOOD must go first to count as
    # copied (with several workers the two race, and GOOD may be "already present").
    result = run_cli("replicate", lying_source, target.url, "--state-dir", str(tmp_path),
                     "--json", "--check-target", "always", "--retries", "1", "--workers", "1")
    assert result.returncode == 1, result.stderr
    data = parse_json(result.stdout)
    assert data["counts"]["copied"] == 1
    assert data["skipped"] == {"gone from the source since it was listed": 1}
    reasons = {f["item"][-1]: f["reason"] for f in data["failures"]}
    assert "source lists it but cannot serve its file" in reasons["c"]
    assert "HTTP 401" in reasons["d"] and "credentials" in reasons["d"]
    assert "target refused the file: HTTP 400" in reasons["e"]
    assert "HTTP 500" in reasons["f"] and "boom" in reasons["f"]
    assert f"holds instance {GOOD_ID}, not {OTHER_ID}" in reasons[OTHER_ID[-1]]
    # The rerun retries the recorded failures first (still failing: still reported).
    again = parse_json(run_cli("replicate", lying_source, target.url, "--state-dir",
                               str(tmp_path), "--json", "--retries", "1").stdout)
    assert again["counts"]["failed"] == 5


def test_target_dying_mid_run_stops_it_and_a_rerun_finishes(orthanc_factory, tmp_path):
    source = orthanc_factory()
    source.upload(make_dataset(150, rows=16, cols=16))
    target = orthanc_factory()
    killed = threading.Event()

    def progress(summary, total):
        if summary.processed >= 40 and not killed.is_set():
            killed.set()
            target.stop()

    src, tgt = Endpoint(source.url), Endpoint(target.url)
    store = StateStore(tmp_path, "replicate", src.base_url, tgt.base_url)
    quick = Options(workers=2, policy=RetryPolicy(attempts=3, base_delay=0.1))
    summary = Replication(src, tgt, store, quick, Writes(), progress).run()
    assert summary.exit_code == 1 and "cannot connect" in summary.aborted
    assert summary.count(CopyOutcome.FAILED) == 0  # the casualties of the stop are redone, not failed
    target.start()
    src, tgt = Endpoint(source.url), Endpoint(target.url)
    rerun = Replication(src, tgt, store, Options(verify=True), Writes()).run()
    assert rerun.ok and rerun.resumed_from
    assert md5s(target) == md5s(source)


def test_storage_import_into_a_dead_target_is_refused(tmp_path, orthanc_factory):
    target = orthanc_factory()
    target.stop()
    (tmp_path / "st").mkdir()
    result = run_cli("import-storage", str(tmp_path / "st"), target.url, "--state-dir",
                     str(tmp_path / "state"), env=child_env())
    assert result.returncode == 1 and "target" in result.stderr and "cannot connect" in result.stderr


class HalfSource(LyingSource):
    """Announces GOOD's full length on /file, sends half of it, and hangs up."""

    def do_GET(self):  # noqa: N802
        if self.path == f"/instances/{GOOD_ID}/file":
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom")
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[:len(GOOD) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


def test_a_source_that_breaks_off_mid_file_leaves_nothing_on_the_target(orthanc_factory,
                                                                        tmp_path):
    """The relay cuts the target's POST short: Orthanc stores no half instance."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), HalfSource)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        target = orthanc_factory()
        src = Endpoint(f"http://127.0.0.1:{httpd.server_address[1]}")
        tgt = Endpoint(target.url)
        store = StateStore(tmp_path, "replicate", src.base_url, tgt.base_url)
        quick = Options(workers=1, presence=PresenceMode.NEVER,
                        policy=RetryPolicy(attempts=2, base_delay=0.01))
        summary = Replication(src, tgt, store, quick, Writes()).run()
        assert summary.aborted and "bytes short" in summary.aborted
        assert target.statistics()["CountInstances"] == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
