"""`orchestrator validate` and `schema` as a user runs them, against real Orthanc configs
written by the test harness (and, once, a real Orthanc serving the URL validate derives)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orchestrator.cli import main
from tests.harness.orthanc import OrthancServer

PLAN = """\
# yaml-language-server: $schema=../orchestrator/data/plan.schema.json
version: 1
state_dir: state
service:
  name: orthanc-test
  manager: process
  binary: {binary}
  config: {config}
  pidfile: run/orthanc.pid
steps:
  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {relocate}}}
  - upgrade: {{timeout: 600, stall: 60}}
  - start-service
  - health-check: {{expect: {{database_version: 6}}}}
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def write_plan(folder: Path, server: OrthancServer, *, config: str | None = None,
               relocate: str = "db-v7", name: str = "plan.yaml") -> Path:
    plan = folder / name
    plan.write_text(PLAN.format(binary=server.binary, config=config or server.config_path,
                                relocate=relocate))
    return plan


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def server(orthanc_factory) -> OrthancServer:
    """A harness Orthanc config on disk (the server is not started)."""
    return orthanc_factory(start=False)


def test_validate_reads_the_config_and_derives_the_url(server, tmp_path):
    plan = write_plan(tmp_path, server)
    before = tree(tmp_path)
    done = run_cli("validate", str(plan), "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["ok"] is True and doc["plan"] == str(plan)
    assert doc["service"]["url"] == server.url and doc["service"]["url_from"] == "config HttpPort"
    assert doc["config"]["http_port"] == server.port
    assert doc["config"]["storage_dir"] == str(server.root / "storage")
    assert doc["config"]["index_backend"] == "sqlite"
    assert [s["kind"] for s in doc["steps"]] == ["preflight", "stop-service", "snapshot",
                                                 "relocate", "upgrade", "start-service",
                                                 "health-check"]
    assert doc["steps"][3]["options"]["to"] == str(tmp_path / "db-v7")
    assert doc["state_dir"] == str(tmp_path / "state") and doc["notes"] == []
    assert tree(tmp_path) == before  # validate writes nothing (no state dir, no journal)

    human = run_cli("validate", str(plan))
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"{plan}: OK (plan version 1, 7 steps)")
    assert f"HttpPort {server.port}" in human.stdout and server.url in human.stdout


def test_validate_a_config_folder_given_relative_to_the_plan(server, tmp_path):
    sub = tmp_path / "plans"
    sub.mkdir()
    relative = os.path.relpath(server.config_path.parent, sub)  # e.g. ../../orthanc0/config
    assert not Path(relative).is_absolute()
    plan = write_plan(sub, server, config=relative)
    done = run_cli("validate", str(plan), "--json", cwd="/")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["config"]["http_port"] == server.port
    assert doc["service"]["config"] == str(server.config_path.parent)


def test_a_broken_config_is_bad_input_naming_its_file_and_line(server, tmp_path):
    text = server.config_path.read_text().splitlines()
    text.insert(3, '  "HttpPort" 8042,')  # a missing colon on line 4
    server.config_path.write_text("\n".join(text))
    plan = write_plan(tmp_path, server)
    done = run_cli("validate", str(plan))
    assert done.returncode == 2
    first = done.stderr.splitlines()[0]
    # The config reader's own format: "<file>, line 4, column 14: ..."
    assert first.startswith(f"orchestrator: error: {server.config_path}, line 4")
    assert "Traceback" not in done.stderr


def test_a_missing_config_is_bad_input(server, tmp_path):
    plan = write_plan(tmp_path, server, config=str(tmp_path / "nowhere.json"))
    done = run_cli("validate", str(plan))
    assert done.returncode == 2 and "nowhere.json" in done.stderr.splitlines()[0]
    assert "Traceback" not in done.stderr


def test_relocating_onto_the_folder_in_use_is_refused(server, tmp_path):
    plan = write_plan(tmp_path, server, relocate=str(server.root / "storage"))
    done = run_cli("validate", str(plan), "--json")
    assert done.returncode == 2
    doc = json.loads(done.stdout)
    assert doc["problems"][0]["path"] == "steps[3].relocate.to"
    assert doc["error"].startswith(f"{plan}:14: steps[3].relocate.to: ")
    assert "is the database folder in use" in doc["error"]


def test_without_the_config_reader_validate_says_so_in_one_line(server, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setitem(sys.modules, "orchestrator.orthanc.config", None)  # import fails
    plan = write_plan(tmp_path, server)
    with pytest.raises(SystemExit) as info:
        main(["validate", str(plan)])
    out = capsys.readouterr().out
    assert info.value.code == 0
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == ["note: orchestrator.orthanc.config is not available: the Orthanc "
                     "configuration was not checked"]


def test_warnings_for_what_this_host_lacks(server, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_PASSWORD_VAR", raising=False)
    plan = tmp_path / "p.yaml"
    plan.write_text(f"version: 1\nservice:\n  name: o\n  binary: {tmp_path}/missing/Orthanc\n"
                    f"  config: {server.config_path}\n"
                    "  credentials: {username: u, password_env: NO_SUCH_PASSWORD_VAR}\n"
                    "steps: [preflight]\n")
    done = run_cli("validate", str(plan), "--json")
    assert done.returncode == 0, done.stderr
    warnings = json.loads(done.stdout)["warnings"]
    assert any("missing/Orthanc is not an executable file" in w for w in warnings)
    assert any("NO_SUCH_PASSWORD_VAR is not set here" in w for w in warnings)


def test_schema_command_prints_the_shipped_schema():
    done = run_cli("schema")
    assert done.returncode == 0
    shipped = Path(__file__).resolve().parents[2] / "orchestrator" / "data" / "plan.schema.json"
    assert json.loads(done.stdout) == json.loads(shipped.read_text())


@pytest.mark.orthanc
def test_the_derived_url_reaches_the_real_orthanc(orthanc_factory, tmp_path):
    server = orthanc_factory(start=True)
    plan = write_plan(tmp_path, server)
    doc = json.loads(run_cli("validate", str(plan), "--json").stdout)
    system = requests.get(doc["service"]["url"] + "/system", timeout=10).json()
    assert system["DatabaseVersion"] == 6 and system["HttpPort"] == server.port


BOMB = "\n".join([f"a0: &a0 [{', '.join(['x'] * 9)}]"]
                 + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)])


@pytest.mark.parametrize("name,data,where", [
    ("bomb.yaml", BOMB.encode(), ":5: refused: more than"),
    ("garbage.yaml", bytes(range(256)), ":1: binary data"),
    ("list.yaml", b"- preflight\n", ":1: the plan must be a mapping"),
    ("huge.yaml", None, ": the plan is larger than"),
])
def test_bad_plans_in_a_real_process(tmp_path, name, data, where):
    path = tmp_path / name
    if data is None:
        with open(path, "wb") as f:
            f.truncate(50 * 1024 * 1024)
    else:
        path.write_bytes(data)
    before = tree(tmp_path)
    done = run_cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"orchestrator: error: {path}{where}"), lines
    assert lines[1].startswith("  hint: ")
    assert tree(tmp_path) == before
