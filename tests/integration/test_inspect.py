"""`orchestrator inspect` against real Orthanc 1.10.1, and the config reader against its verdicts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from orchestrator.orthanc.config import load_config
from tests.harness.orthanc import ORTHANC_BINARY, OrthancServer, free_port, set_schema_version

pytestmark = pytest.mark.orthanc

DATA = Path(__file__).parent.parent / "data" / "config"
TORTURE = json.loads((DATA / "torture.json").read_text())


def inspect(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", "inspect", *args],
                          capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


def inspect_json(*args: str) -> dict:
    done = inspect(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def codes(data: dict) -> list[str]:
    return [h["code"] for h in data["hazards"]]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, small_dataset):
    """One Orthanc: inspected while running, then stopped for the other tests."""
    if not os.path.exists(ORTHANC_BINARY):
        pytest.skip(f"{ORTHANC_BINARY} is not installed")
    root = tmp_path_factory.mktemp("inspect")
    server = OrthancServer(root / "orthanc")
    server.start()
    try:
        server.upload(small_dataset)
        running = (inspect_json(str(server.config_path)), server.proc.pid,
                   inspect(str(server.config_path)))
    finally:
        server.stop()
    yield server, running
    shutil.rmtree(root, ignore_errors=True)


def test_a_running_orthanc_is_locked_and_named_and_read_over_rest(orthanc, small_dataset):
    """Issue 12: a healthy running server is not a warning. The index file cannot be read
    while Orthanc holds it, so its facts come from the server's REST API, with a note."""
    server, (data, pid, text) = orthanc
    assert data["index"]["locked"] and data["index"]["locked_by"] == pid
    assert data["index"]["schema_version"] is None  # the file's own facts stay as read
    assert codes(data) == []
    assert data["server"]["url"] == f"http://127.0.0.1:{server.port}"
    assert data["server"]["version"] == "1.10.1" and data["server"]["database_version"] == 6
    assert data["server"]["counts"]["instances"] == len(small_dataset)
    assert len(data["notes"]) == 1 and f"pid {pid}" in data["notes"][0]
    assert text.returncode == 0
    assert text.stdout.startswith("Hazards\n  (none)\n\nNotes\n  Orthanc 1.10.1 is running ")
    assert "WARNING" not in text.stdout and "\nRunning server (REST)\n" in text.stdout


def test_a_running_orthanc_that_refuses_rest_keeps_the_lock_warning(tmp_path):
    """With authentication on and no credentials for it, the REST facts cannot be read:
    the lock stays a warning, and a note says why."""
    if not os.path.exists(ORTHANC_BINARY):
        pytest.skip(f"{ORTHANC_BINARY} is not installed")
    server = OrthancServer(tmp_path / "orthanc", username="alice", password="s3cret-pw")
    server.start()
    try:
        data = inspect_json(str(server.config_path))
    finally:
        server.stop()
    assert codes(data) == ["index-locked"] and data["server"] is None
    assert "did not answer" in data["notes"][0] and "s3cret-pw" not in json.dumps(data)


def test_the_stopped_orthanc_counts_and_version(orthanc, small_dataset):
    server, _ = orthanc
    before = sorted(p.name for p in server.index_path.parent.iterdir())
    data = inspect_json(str(server.config_path))
    assert data["index"]["schema_version"] == 6 and not data["index"]["locked"]
    assert data["index"]["counts"] == {"patients": 2, "studies": 4, "series": 8,
                                       "instances": len(small_dataset)}
    assert data["binary"] == {"path": ORTHANC_BINARY, "version": "1.10.1", "expected_schema": 6,
                              "schema_known": True, "error": None}
    assert data["config"]["storage_dir"] == str(server.storage)
    assert data["config"]["http_port"] == server.port
    assert codes(data) == []
    # Reading left no index-wal / index-shm behind (they would be root-owned on a real host).
    assert sorted(p.name for p in server.index_path.parent.iterdir()) == before


def test_a_schema5_copy_is_refused_for_the_deadlock(orthanc, tmp_path):
    server, _ = orthanc
    index_dir = tmp_path / "db-v5"
    index_dir.mkdir()
    shutil.copyfile(server.index_path, index_dir / "index")
    set_schema_version(index_dir / "index", 5)
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({"StorageDirectory": str(server.storage),
                                  "IndexDirectory": str(index_dir)}))
    data = inspect_json(str(config), "--binary", ORTHANC_BINARY)
    assert data["index"]["schema_version"] == 5
    assert codes(data)[0] == "upgrade-deadlock"
    assert data["hazards"][0]["severity"] == "blocker"
    assert "1.10.1" in data["hazards"][0]["message"]


def test_a_missing_index_is_the_fresh_database_trap(tmp_path):
    config = tmp_path / "orthanc.json"
    config.write_text(json.dumps({"StorageDirectory": str(tmp_path / "db-v6")}))
    data = inspect_json(str(config))
    assert codes(data) == ["index-missing"]
    assert not (tmp_path / "db-v6").exists()


def _leaves(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, k)
    elif isinstance(data, list) and not all(isinstance(v, dict) for v in data):
        for v in data:
            yield prefix, v
    elif isinstance(data, list):
        for v in data:
            yield from _leaves(v, prefix)
    else:
        yield prefix, data


def _text_between_equal_jsons(config: str, tries: int = 5) -> tuple[dict, str]:
    """(JSON, text) of `inspect` with the world unchanged between them.

    The service section names the other Orthanc processes on this machine, which
    other tests (or sessions) start and stop at any moment: the text is taken between
    two JSON documents, and kept only when those are equal."""
    before = inspect_json(config)
    for _ in range(tries):
        text = inspect(config).stdout
        after = inspect_json(config)
        if after == before:
            return after, text
        before = after
    raise AssertionError(f"inspect never answered the same twice in {tries} tries")


def test_text_and_json_carry_the_same_facts(orthanc):
    server, _ = orthanc
    data, text = _text_between_equal_jsons(str(server.config_path))
    for key, value in _leaves(data):
        if key in ("ok", "severity", "service"):
            continue
        shown = {True: "yes", False: "no", None: "-"}.get(value, str(value)) \
            if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
        assert shown in text, (key, value)
    for section, title in (("config", "Configuration"), ("index", "Index"), ("binary", "Binary")):
        assert f"\n{title}\n" in text
        for key in data[section]:
            assert key.replace("_", " ") in text


def test_the_debian_configuration_read_only():
    etc = Path("/etc/orthanc")
    if not (etc / "orthanc.json").exists():
        pytest.skip("no Debian Orthanc configuration here")
    watched = [etc, Path("/var/lib/orthanc")]
    before = {p: p.stat().st_mtime_ns for d in watched if d.exists() for p in [d, *d.iterdir()]}
    done = inspect(str(etc) + "/", "--json")
    if done.returncode == 2 and "permission denied" in done.stderr:
        pytest.skip("credentials.json is not readable by this user")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["config"]["storage_dir"] == "/var/lib/orthanc/db-v6"
    assert data["config"]["index_dir"] == "/var/lib/orthanc/db-v6"
    assert data["config"]["defined_in"]["RegisteredUsers"] == "/etc/orthanc/credentials.json"
    assert data["config"]["index_backend"] == "sqlite"
    if not Path("/var/lib/orthanc/db-v6/index").exists():
        assert codes(data)[0] == "index-missing"
    after = {p: p.stat().st_mtime_ns for d in watched if d.exists() for p in [d, *d.iterdir()]}
    assert after == before


# -- the reader against the real binary --------------------------------------------------
def _orthanc_verdict(target: Path, mode: str, env: dict) -> str:
    """Run Orthanc on a case: `--upgrade` (exits after reading the config) or a real start."""
    full_env = {**os.environ, **env}
    if mode == "upgrade":
        done = subprocess.run([ORTHANC_BINARY, "--upgrade", str(target)], capture_output=True,
                              text=True, errors="replace", timeout=120, env=full_env,
                              cwd=target.parent)
        return "accepts" if done.returncode == 0 else "refuses"
    proc = subprocess.Popen([ORTHANC_BINARY, str(target)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=full_env, cwd=target.parent,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return "refuses"
            try:
                requests.get(f"http://127.0.0.1:{env['ORCH_TEST_PORT']}/system", timeout=2)
                return "accepts"
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError(f"Orthanc neither served nor exited on {target.name}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.mark.parametrize("name", sorted(TORTURE))
def test_orthanc_1_10_1_agrees_with_the_recorded_verdict(name, tmp_path):
    if not os.path.exists(ORTHANC_BINARY):
        pytest.skip(f"{ORTHANC_BINARY} is not installed")
    case = TORTURE[name]
    src = DATA / "torture" / name
    target = tmp_path / "cfg" / name
    target.parent.mkdir()
    if src.is_dir():
        shutil.copytree(src, target)
    else:
        shutil.copyfile(src, target)
    env = {"ORCH_TEST_STORAGE": str(tmp_path / "storage"), "ORCH_TEST_PORT": str(free_port())}
    verdict = _orthanc_verdict(target, case["mode"], env)
    assert verdict == case["orthanc"], f"Orthanc {verdict} {name}; recorded: {case['orthanc']}"
    if verdict == "accepts" and case["ours"] == "accepts" and case["mode"] == "upgrade":
        # Orthanc created its index exactly where the reader says it is.
        config = load_config(target, env)
        assert (config.index_dir / "index").exists(), config.index_dir
