"""`orchestrator replicate` between real Orthanc 1.10.1 servers with authentication on both sides."""

from __future__ import annotations

import os
import pty
import random
import shutil
import signal
import subprocess
import threading

import pytest

from orchestrator.orthanc.credentials import Credentials
from orchestrator.replication.outcome import CopyOutcome
from orchestrator.replication.options import Options
from orchestrator.replication.replicate import Replication
from orchestrator.replication.state import StateStore
from orchestrator.replication.transport import Endpoint
from orchestrator.replication.writes import Writes
from orchestrator.report.transfer import document
from tests.harness.dicom import make_dataset
from tests.harness.orthanc import OrthancServer
from tests.harness.replication import (child_env, cli_argv, cmdlines_of, count, md5s, parse_json, run_cli,
                                       start_cli, wait_for_count)

pytestmark = pytest.mark.orthanc

SRC_PW, TGT_PW = "src-Pa55-secret", "tgt-Pa55-secret"
COUNT = 300


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("repl-src")
    server = OrthancServer(root, username="alice", password=SRC_PW)
    server.start()
    server.upload(make_dataset(COUNT, rows=64, cols=64))
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def source_md5s(source):
    return md5s(source)


@pytest.fixture
def target(orthanc_factory):
    return orthanc_factory(username="bob", password=TGT_PW)


def args(source, target, state_dir, *extra):
    return ("replicate", source.url, target.url, "--source-user", "alice",
            "--source-password-env", "SRC_PW", "--target-user", "bob",
            "--target-password-env", "TGT_PW", "--state-dir", str(state_dir), *extra)


ENV = {"SRC_PW": SRC_PW, "TGT_PW": TGT_PW}


def assert_no_secret(*texts):
    for text in texts:
        assert SRC_PW not in text and TGT_PW not in text


def test_copy_verify_and_rerun_copies_nothing(source, source_md5s, target, tmp_path):
    env = child_env(**ENV)
    dry = run_cli(*args(source, target, tmp_path, "--dry-run", "--json"), env=env)
    assert dry.returncode == 0, dry.stderr
    assert parse_json(dry.stdout)["counts"]["would_copy"] == COUNT
    assert count(target) == 0 and not list(tmp_path.iterdir())  # dry run wrote nothing

    proc = start_cli(*args(source, target, tmp_path, "--verify", "--json"), env=env)
    argv_seen = cmdlines_of(proc.pid)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    data = parse_json(out)
    assert data["counts"]["copied"] == COUNT and data["verify"]["ok"]
    assert data["verify"]["equal"] == COUNT
    assert md5s(target) == source_md5s
    assert_no_secret(out, err, *argv_seen, *(p.read_text() for p in tmp_path.iterdir()))

    again = run_cli(*args(source, target, tmp_path, "--json"), env=env)
    assert again.returncode == 0
    counts = parse_json(again.stdout)["counts"]
    assert counts["copied"] == 0 and counts["failed"] == 0

    full = run_cli(*args(source, target, tmp_path, "--full"), env=env)  # no cursor: asks the target
    assert full.returncode == 0 and "already present  300" in full.stdout
    assert_no_secret(again.stdout, full.stdout, full.stderr)


def test_wrong_password_is_refused_with_a_hint_and_no_secret(source, target, tmp_path):
    url = source.url.replace("http://", f"http://alice:{SRC_PW}@")
    result = run_cli("replicate", url, target.url, "--target-user", "bob",
                     "--target-password-env", "TGT_PW", "--state-dir", str(tmp_path),
                     env=child_env(TGT_PW="not-" + TGT_PW))
    assert result.returncode == 1
    assert "target" in result.stderr and "HTTP 401" in result.stderr and "credentials" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_killed_runs_resume_to_a_complete_copy(source, source_md5s, target, tmp_path):
    env = child_env(**ENV)
    rng = random.Random(5)
    kills = 0
    for threshold in sorted(rng.sample(range(20, COUNT - 20), 3)):
        proc = start_cli(*args(source, target, tmp_path, "--workers", "2"), env=env)
        if wait_for_count(target, threshold, proc):
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 2
    done = run_cli(*args(source, target, tmp_path, "--verify", "--json"), env=env)
    assert done.returncode == 0, done.stderr
    data = parse_json(done.stdout)
    assert data["resumed_from"] and data["verify"]["ok"]
    assert data["counts"]["copied"] < COUNT  # the earlier runs' work was kept
    assert md5s(target) == source_md5s  # every instance, equal MD5, none extra
    assert count(target) == COUNT


def test_target_restart_mid_run_is_ridden_over_by_retries(source, source_md5s, target, tmp_path):
    restarted = threading.Event()

    def progress(summary, total):
        if summary.processed == 60 and not restarted.is_set():
            restarted.set()
            target.restart()  # the workers meet refused connections meanwhile

    src = Endpoint(source.url, Credentials("alice", SRC_PW))
    tgt = Endpoint(target.url, Credentials("bob", TGT_PW))
    store = StateStore(tmp_path, "replicate", src.base_url, tgt.base_url)
    summary = Replication(src, tgt, store, Options(workers=4, verify=True), Writes(), progress).run()
    assert restarted.is_set()
    assert summary.ok, document(summary)
    assert summary.count(CopyOutcome.COPIED) + summary.count(CopyOutcome.PRESENT) == COUNT
    assert md5s(target) == source_md5s


def test_dead_target_stops_the_run_and_says_so(source, target, tmp_path):
    target.stop()
    result = run_cli(*args(source, target, tmp_path), env=child_env(**ENV))
    assert result.returncode == 1
    assert "target" in result.stderr and "cannot connect" in result.stderr
    assert_no_secret(result.stdout, result.stderr)


def test_progress_bar_on_a_terminal_only(source, target, tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(cli_argv(*args(source, target, tmp_path)), env=child_env(**ENV),
                            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    out = proc.stdout.read().decode()
    proc.wait(timeout=120)
    os.close(master)
    assert proc.returncode == 0
    assert b"\rreplicate  [" in drawn and b"/s" in drawn
    assert "\r" not in out
    assert_no_secret(drawn.decode(errors="replace"))


def test_verify_hashes_files_where_md5s_are_not_stored(orthanc_factory, tmp_path):
    source = orthanc_factory(config_overrides={"StoreMD5ForAttachments": False})
    source.upload(make_dataset(12, rows=8, cols=8, seed="nomd5"))
    target = orthanc_factory()
    result = run_cli("replicate", source.url, target.url, "--state-dir", str(tmp_path),
                     "--verify", "--json")
    assert result.returncode == 0, result.stderr
    verify = parse_json(result.stdout)["verify"]
    assert verify["ok"] and verify["equal"] == 12
    assert verify["notes"] == ["source does not store MD5s (StoreMD5ForAttachments off): "
                               "hashed 12 files instead"]


def test_https_is_verified_unless_told_otherwise(tmp_path, orthanc_factory):
    from tests.harness.replication import TlsProxy, make_certificate

    certs = make_certificate(tmp_path)
    if certs is None:
        pytest.skip("openssl is not installed")
    pem, cert = certs
    source = orthanc_factory()
    source.upload(make_dataset(5, rows=8, cols=8, seed="tls"))
    target = orthanc_factory()
    proxy = TlsProxy(target.port, pem)
    try:
        base = ("replicate", source.url, proxy.url, "--state-dir", str(tmp_path / "s"), "--json")
        refused = run_cli(*base)
        assert refused.returncode == 1 and "TLS verification failed" in refused.stderr
        assert "--ca-bundle" in refused.stderr
        trusted = run_cli(*base, "--ca-bundle", str(cert), "--verify")
        assert trusted.returncode == 0, trusted.stderr
        assert parse_json(trusted.stdout)["counts"]["copied"] == 5
        insecure = run_cli(*base, "--insecure", "--full")
        assert insecure.returncode == 0 and parse_json(insecure.stdout)["counts"]["copied"] == 0
        both = run_cli(*base, "--insecure", "--ca-bundle", str(cert))
        assert both.returncode == 2 and "contradict" in both.stderr
    finally:
        proxy.close()
