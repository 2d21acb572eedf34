"""The Ansible fleet playbook, for real: ansible-core rolls plans over three local hosts.

Each inventory host is a local connection with its own throwaway Orthanc (process
manager) and plan. The second host's health check expects a version that is not
installed, so orchestrator rolls it back (exit 3): the roll must stop there, the
third host must be untouched, and every Orthanc must end healthy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.world import World

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

STEPS = """\
  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {to}}}
  - upgrade: {{timeout: 120, stall: 60}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60{expect}}}
"""


def _ansible_playbook() -> str:
    # The one installed beside this Python (the venv's), else the one on PATH.
    exe = str(Path(sys.executable).with_name("ansible-playbook"))
    if not os.path.exists(exe):
        exe = shutil.which("ansible-playbook") or exe
    if not os.path.exists(exe):
        pytest.skip("ansible-core is not installed (pip install '.[fleet]')")
    return exe


@pytest.fixture
def fleet(tmp_path):
    worlds: dict[str, World] = {}
    data = make_dataset(6, per_series=3, rows=32, cols=32)
    try:
        for name in ("h1", "h2", "h3"):
            w = World(tmp_path / name)
            w.start()
            w.upload(data)
            worlds[name] = w
        yield tmp_path, worlds
    finally:
        for w in worlds.values():
            w.kill_all()


def _inventory(tmp: Path, worlds: dict[str, World], failing: str | None = "h2") -> Path:
    lines = ["[orthanc]"]
    for name, w in worlds.items():
        expect = ", expect: {database_version: 99}" if name == failing else ""
        plan = w.plan(STEPS.format(to=json.dumps(str(w.root / "lib" / "db-v6-next")), expect=expect),
                      service_name=f"orthanc-{name}")
        lines.append(f"{name} orchestrator_plan={plan}")
    lines += ["", "[orthanc:vars]", "ansible_connection=local",
              f"ansible_python_interpreter={sys.executable}",
              "orchestrator_command=" + json.dumps([sys.executable, "-m", "orchestrator"])]
    inv = tmp / "inventory.ini"
    inv.write_text("\n".join(lines) + "\n")
    return inv


def _play(tmp: Path, inv: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
                "ANSIBLE_REMOTE_TEMP": str(tmp / "ansible-remote"), "ANSIBLE_HOME": str(tmp / "ansible"),
                "ANSIBLE_STDOUT_CALLBACK": "default", "PYTHONPATH": str(REPO)})
    return subprocess.run([_ansible_playbook(), "-i", str(inv), str(REPO / "playbooks" / "fleet.yml"),
                           *extra], capture_output=True, text=True, timeout=600, env=env, cwd=tmp)


def _recap(stdout: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines: host -> {ok, changed, failed, ...}."""
    out = {}
    for line in stdout.split("PLAY RECAP", 1)[-1].splitlines():
        if ":" not in line or "=" not in line:
            continue
        host, rest = line.split(":", 1)
        out[host.strip()] = {k: int(v) for k, v in (p.split("=") for p in rest.split())}
    return out


def test_check_mode_plans_every_host_and_changes_nothing(fleet):
    tmp, worlds = fleet
    inv = _inventory(tmp, worlds)
    configs = {n: w.config.read_bytes() for n, w in worlds.items()}
    done = _play(tmp, inv, "--check")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    recap = _recap(done.stdout)
    assert set(recap) == {"h1", "h2", "h3"}
    for name, w in worlds.items():
        assert recap[name]["failed"] == 0
        assert recap[name]["changed"] == 1  # the plan would change the host
        assert w.config.read_bytes() == configs[name]
        assert not (w.root / "lib" / "db-v6-next").exists()
        assert w.get("/system")["DatabaseVersion"] == 6


def test_roll_stops_at_the_failing_host_and_every_host_ends_healthy(fleet):
    tmp, worlds = fleet
    inv = _inventory(tmp, worlds)
    h3_config = worlds["h3"].config.read_bytes()
    done = _play(tmp, inv)
    out = done.stdout
    assert done.returncode != 0, out[-3000:]
    recap = _recap(out)
    # h1 upgraded, h2 failed and was rolled back by the tool, h3 never reached.
    assert recap["h1"]["failed"] == 0 and recap["h1"]["changed"] >= 1, out[-3000:]
    assert recap["h2"]["failed"] == 1, out[-3000:]
    assert "h3" not in recap or recap["h3"]["ok"] == 0
    assert "rolled-back (exit 3)" in " ".join(out.split())
    assert "NO MORE HOSTS LEFT" in out or "h3" not in recap
    # Every Orthanc answers with its data.
    for w in worlds.values():
        w.wait_up(60)
        assert w.counts()["CountInstances"] == 6
    # h1 now serves from the new folder; h2 and h3 from the old one, config byte-identical for h3.
    assert "db-v6-next" in worlds["h1"].config.read_text()
    assert "db-v6-next" not in worlds["h2"].config.read_text()
    assert worlds["h3"].config.read_bytes() == h3_config


def test_a_second_play_over_an_upgraded_fleet_is_ok_and_changes_nothing(fleet):
    """Issue 12: a second `ansible-playbook fleet.yml` used to fail ("db-v6-next is the
    database folder in use"); a host whose last run of the same plan finished done is ok."""
    tmp, worlds = fleet
    inv = _inventory(tmp, worlds, failing=None)
    first = _play(tmp, inv)
    assert first.returncode == 0, first.stdout[-3000:]
    assert all(r["changed"] >= 1 for r in _recap(first.stdout).values()), first.stdout[-3000:]
    configs = {n: w.config.read_bytes() for n, w in worlds.items()}
    again = _play(tmp, inv)
    assert again.returncode == 0, again.stdout[-3000:]
    recap = _recap(again.stdout)
    assert all(r["failed"] == 0 and r["changed"] == 0 for r in recap.values()), again.stdout[-3000:]
    assert again.stdout.count("already applied") == len(worlds)
    assert {n: w.config.read_bytes() for n, w in worlds.items()} == configs
