"""The `package` step, `rollback` and `revert` through the tool's CLI on a real Debian 12 host.

One host for the module (the scenarios share it, in order): each leaves Orthanc answering
with its stores working. The `plan` check and the failures first (they must leave a clean
1.10.1), then the jump to trixie's 1.12.7 and its revert after new instances arrived.
"""

from __future__ import annotations

import json
import signal
import time

from tests.harness.debian_host import VERSIONS
from tests.hosts.conftest import etc_snapshot

OLD, TRIXIE, SID = VERSIONS["bookworm"], VERSIONS["trixie"], VERSIONS["sid"]
TOOL = "/opt/orchestrator/bin/orchestrator"
PLAN = """version: 1
state_dir: /var/lib/orchestrator
service:
  name: orthanc
  manager: systemd
  binary: /usr/sbin/Orthanc
  config: /etc/orthanc/
  user: orthanc
  url: http://127.0.0.1:8042
  credentials: {{username: orthanc, password_env: ORTHANC_PASSWORD}}
steps:
  - preflight
  - stop-service: {{timeout: 120}}
  - snapshot
  - relocate: {{to: /var/lib/orthanc/{folder}}}
  - package: {{name: orthanc, version: "{version}", release: {release}}}
  - start-service: {{timeout: 120}}
  - health-check: {{timeout: 120{expect}}}
"""


def write_plan(host, name: str, *, folder: str | None, version: str, release: str,
               expect: str = "") -> str:
    """A plan with snapshot, relocate (to `folder`; None: no relocation) and the package step."""
    path = f"/root/{name}.yaml"
    text = PLAN.format(folder=folder, version=version, release=release, expect=expect)
    if folder is None:
        text = text.replace("  - relocate: {to: /var/lib/orthanc/None}\n", "")
    host.path(path).write_text(text)
    return path


def tool(host, *args: str, timeout: float = 900):
    return host.exec(["env", "ORTHANC_PASSWORD=pkg-test-secret", TOOL, *args], check=False,
                     timeout=timeout)


def store(host, patient: str) -> str:
    body = json.dumps({"Tags": {"PatientID": patient, "PatientName": "PKG"}})
    made = json.loads(host.http("/tools/create-dicom", method="POST", data=body))
    assert json.loads(host.http(f"/instances/{made['ID']}"))["ID"] == made["ID"]
    return made["ID"]


def instances(host) -> set[str]:
    return set(json.loads(host.http("/instances")))


def running(host, comm: str) -> bool:
    """A process named `comm` runs inside the host (minbase has no pgrep)."""
    # -q: a match counts even when a process vanished during the glob (grep then says 2).
    return host.run(
        f"grep -qsx {comm} /proc/[0-9]*/comm", check=False).returncode == 0


def clean_old(host, etc_before: str) -> None:
    """A clean 1.10.1: dpkg ii, nothing half-way, /etc/orthanc as before, stores working."""
    assert host.dpkg_version() == ("ii", OLD)
    assert host.run("dpkg-query -W -f '${db:Status-Abbrev}\\n' | grep -v '^ii' | sort -u",
                    check=False).stdout.strip() in ("", "rc")
    assert etc_snapshot(host) == etc_before
    assert not host.path("/usr/sbin/policy-rc.d").exists()
    assert host.wait_http()["Version"] == "1.10.1"
    store(host, f"AFTER-{time.time_ns()}")


def test_plan_shows_the_apt_commands_and_changes_nothing(bookworm_host):
    host = bookworm_host
    store(host, "P0")
    plan = write_plan(host, "plan-only", folder="db-plan", version=TRIXIE, release="trixie")
    etc, cache = etc_snapshot(host), host.run("ls /var/cache/apt/archives").stdout
    done = tool(host, "plan", plan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "apt-get install -y -q --allow-downgrades" in done.stdout
    assert f"-t trixie orthanc={TRIXIE}" in done.stdout
    assert "1.12.7" in done.stdout  # preflight judged the new binary's version
    assert host.dpkg_version() == ("ii", OLD) and etc_snapshot(host) == etc
    assert host.run("ls /var/cache/apt/archives").stdout == cache
    assert not host.path("/var/lib/orthanc/db-plan").exists()

    unknown = write_plan(host, "unknown", folder="db-x", version="9.9.9-1", release="trixie")
    done = tool(host, "plan", unknown)
    assert done.returncode != 0 and "\n" not in done.stderr.strip() or "9.9.9-1" in done.stdout
    assert TRIXIE in done.stdout + done.stderr  # the known versions are listed
    assert host.dpkg_version() == ("ii", OLD) and etc_snapshot(host) == etc

    early = host.path(unknown).read_text().replace("  - snapshot\n", "").replace(
        "  - relocate: {to: /var/lib/orthanc/db-x}\n", "")
    host.path("/root/early.yaml").write_text(early)
    done = tool(host, "validate", "/root/early.yaml")
    assert done.returncode != 0 and "only copy of the index" in done.stdout + done.stderr


def test_apt_failing_half_way_rolls_back_to_a_clean_old_version(bookworm_host):
    host = bookworm_host
    etc = etc_snapshot(host)
    kept = instances(host)
    plan = write_plan(host, "to-sid", folder="db-sid", version=SID, release="sid")
    done = tool(host, "run", plan)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "rolled back" in out.lower(), out
    clean_old(host, etc)
    assert kept <= instances(host)
    assert "/var/lib/orthanc/db-v6" in host.path("/etc/orthanc/orthanc.json").read_text()


def test_a_failing_health_check_rolls_back_with_the_old_package(bookworm_host):
    host = bookworm_host
    etc = etc_snapshot(host)
    kept = instances(host)
    plan = write_plan(host, "bad-health", folder="db-bad", version=TRIXIE, release="trixie",
                      expect=", expect: {version: 9.9.9}")
    done = tool(host, "run", plan)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "rolled back" in out.lower(), out
    clean_old(host, etc)
    assert kept <= instances(host)


def test_kill_9_during_the_package_step_then_status_and_rollback(bookworm_host):
    host = bookworm_host
    etc = etc_snapshot(host)
    kept = instances(host)
    plan = write_plan(host, "killed", folder="db-killed", version=TRIXIE, release="trixie")
    host.run(f"(env ORTHANC_PASSWORD=pkg-test-secret {TOOL} run {plan} > /root/killed.out 2>&1 &"
             " echo $! > /root/killed.pid)")
    pid = int(host.path("/root/killed.pid").read_text())
    deadline = time.monotonic() + 300
    # apt has begun changing packages: its dpkg child runs (the stage step's brief
    # `dpkg --print-architecture` does not count; `[-]`: grep's own command line does not match).
    while host.run("grep -qsa -e '[-]-status-fd' /proc/[0-9]*/cmdline", check=False).returncode:
        assert time.monotonic() < deadline, host.path("/root/killed.out").read_text()
        time.sleep(0.02)
    host.run(f"kill -{int(signal.SIGKILL)} {pid}")
    # apt goes on alone and holds dpkg's lock: the rollback starts at once and waits for it.
    assert running(host, "apt-get")
    status = tool(host, "status", plan)
    assert "stopped during package" in status.stdout, status.stdout
    assert f"orchestrator rollback {plan}" in status.stdout
    orphan_held_the_lock = running(host, "apt-get")
    done = tool(host, "rollback", plan)
    assert done.returncode in (0, 3), done.stdout + done.stderr  # rolled back
    assert orphan_held_the_lock  # else this run did not test the wait (apt ran ~10 s here)
    assert not running(host, "apt-get") and not running(host, "dpkg")
    clean_old(host, etc)
    assert kept <= instances(host)


def test_jump_to_trixie_then_revert_after_new_instances_arrived(bookworm_host):
    host = bookworm_host
    kept = instances(host)
    etc = etc_snapshot(host)
    plan = write_plan(host, "to-trixie", folder="db-trixie", version=TRIXIE, release="trixie")
    done = tool(host, "run", plan)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.dpkg_version() == ("ii", TRIXIE)
    assert host.wait_http()["Version"] == "1.12.7"
    assert instances(host) == kept  # every instance kept
    arrived = {store(host, f"NEW-{i}") for i in range(3)}

    cached = host.run(f"ls /var/cache/apt/archives/orthanc_{OLD}_*.deb").stdout.strip()
    host.run(f"mv {cached} /root/")
    gone = tool(host, "revert", plan)
    assert gone.returncode == 1, gone.stdout + gone.stderr
    assert f"the old package orthanc {OLD} is gone" in gone.stdout + gone.stderr
    assert host.dpkg_version() == ("ii", TRIXIE) and host.wait_http()["Version"] == "1.12.7"
    host.run(f"mv /root/{cached.rsplit('/', 1)[1]} {cached}")

    dry = tool(host, "revert", "--dry-run", plan)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "3 instances" in dry.stdout and host.dpkg_version() == ("ii", TRIXIE)
    assert host.wait_http()["Version"] == "1.12.7"  # the dry run stopped nothing
    done = tool(host, "revert", plan)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "3 instances received since the upgrade were carried back" in out
    assert "1.12.7 altered the index: Labels table added" in out
    assert "the old binary is not started on it" in out
    assert host.dpkg_version() == ("ii", OLD)
    assert etc_snapshot(host) == etc
    assert host.wait_http()["Version"] == "1.10.1"
    assert instances(host) == kept | arrived  # nothing lost
    store(host, "AFTER-REVERT")
