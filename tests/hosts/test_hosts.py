"""Real Debian hosts boot offline with systemd as PID 1 and the stock orthanc.service, and the
shipped playbook runs inside one against that service."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.services import proof
from orchestrator.services.base import ServiceTarget
from tests.harness.debian_host import VERSIONS, HostError
from tests.hosts.conftest import CHECKOUT, WHEELS_INSIDE

PLAYBOOK = CHECKOUT / "playbooks" / "debian-systemd.yaml"
PASSWORD = "playbook-test-secret"


@pytest.mark.parametrize("image, version", [("bookworm_image", "1.10.1"),
                                            ("trixie_image", "1.12.7")])
def test_a_host_boots_with_its_orthanc_service_answering(request, host_factory, image, version):
    host = host_factory(request.getfixturevalue(image), name=image.split("_")[0])
    assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert host.run("systemctl is-active orthanc").stdout.strip() == "active"
    assert host.wait_http()["Version"] == version
    release = "bookworm" if version == "1.10.1" else "trixie"
    assert host.dpkg_version() == ("ii", VERSIONS[release])
    # Offline: only loopback, yet the next release's packages sit in the apt cache.
    assert host.run("ls /sys/class/net").stdout.split() == ["lo"]
    cached = host.run("ls /var/cache/apt/archives").stdout
    assert f"orthanc_{VERSIONS['sid'].replace(':', '%3a')}_amd64.deb" in cached
    assert f"orthanc_{VERSIONS[release]}_amd64.deb" in cached  # the installed one too
    # The host's own /tmp is not the container's.
    marker = Path("/tmp") / f"host-marker-{time.time_ns()}"
    marker.write_text("x")
    try:
        assert host.run(f"test -e {marker}", check=False).returncode == 1
    finally:
        marker.unlink()
    _the_container_orthanc_is_not_this_machines(host)


def _the_container_orthanc_is_not_this_machines(host) -> None:
    """Seen from this machine, the container's Orthanc runs `/usr/sbin/Orthanc /etc/orthanc/`,
    the command line of this machine's own service: it is neither that service nor another
    instance here, yet the stock init script's start-stop-daemon --exec would signal it."""
    binary = Path("/usr/sbin/Orthanc")
    if not binary.exists():
        return
    root = os.stat(host.root)
    theirs = [p for _, p in proof.orthanc_processes(binary, any_root=True)
              if _same_file(f"/proc/{p.pid}/root", root)]
    assert len(theirs) == 1 and theirs[0].elsewhere, theirs
    pid = theirs[0].pid
    target = ServiceTarget(name="orthanc", binary=binary, config=Path("/etc/orthanc"))
    assert theirs[0].runs(target.config)  # the same path, in another root
    assert pid not in [p.pid for p in proof.service_processes(target)]
    assert pid not in [p.pid for p in proof.other_instances(target)]
    assert pid in [p.pid for p in proof.exec_collateral(target)]
    sees = subprocess.run(["start-stop-daemon", "--stop", "--test", "--exec", str(binary)],
                          capture_output=True, text=True).stdout
    assert f" {pid}." in sees, sees  # dpkg's own answer


def _same_file(path: str, st: os.stat_result) -> bool:
    try:
        mine = os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def test_the_shipped_playbook_plans_and_runs_against_the_real_service(bookworm_host):
    host = bookworm_host
    for i in range(3):
        host.http("/tools/create-dicom", method="POST",
                  data=json.dumps({"Tags": {"PatientID": f"P{i}", "PatientName": f"N{i}"}}))
    before = json.loads(host.http("/statistics"))
    shutil.copy(PLAYBOOK, host.path("/root/orthanc.yaml"))
    config = host.path("/etc/orthanc/orthanc.json").read_bytes()
    tool = "/opt/orchestrator/bin/orchestrator"

    plan = host.exec(["env", f"ORTHANC_PASSWORD={PASSWORD}", tool, "plan", "/root/orthanc.yaml"],
                     check=False, timeout=300)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "relocate" in plan.stdout and f"orthanc={VERSIONS['trixie']}" in plan.stdout
    assert host.path("/etc/orthanc/orthanc.json").read_bytes() == config  # plan changed nothing
    assert host.run("systemctl is-active orthanc").stdout.strip() == "active"

    run = host.exec(["env", f"ORTHANC_PASSWORD={PASSWORD}", tool, "run", "/root/orthanc.yaml"],
                    check=False, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert host.run("systemctl is-active orthanc").stdout.strip() == "active"
    assert json.loads(host.http("/statistics"))["CountInstances"] == before["CountInstances"]
    assert "db-v6-next" in host.path("/etc/orthanc/orthanc.json").read_text()
    assert host.dpkg_version() == ("ii", VERSIONS["trixie"])  # the playbook's package step
    assert host.wait_http()["Version"] == "1.12.7"
    assert host.path("/var/lib/orthanc/db-v6-next/index").exists()


def test_a_host_with_sysvinit_as_init(sysvinit_image, wheels, host_factory):
    """The SysV path: Debian 12 booted with sysvinit-core instead of systemd-sysv; the init
    script works, then the shipped SysV playbook plans (nothing changed) and runs against it."""
    host = host_factory(sysvinit_image, wheels, name="sysv", wait=False)  # no is-system-running
    assert host.run("cat /proc/1/comm").stdout.strip() == "init"
    deadline = time.monotonic() + 60
    while host.run("/etc/init.d/orthanc status", check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise HostError("orthanc did not start under sysvinit: " + host.console())
        time.sleep(0.2)
    assert host.wait_http()["Version"] == "1.10.1"
    host.run("/etc/init.d/orthanc stop")
    assert host.run("/etc/init.d/orthanc status", check=False).returncode != 0
    host.run("/etc/init.d/orthanc start")
    assert host.wait_http()["Version"] == "1.10.1"

    for i in range(3):
        host.http("/tools/create-dicom", method="POST",
                  data=json.dumps({"Tags": {"PatientID": f"S{i}", "PatientName": f"N{i}"}}))
    before = json.loads(host.http("/statistics"))["CountInstances"]
    tool = host.install_tool(WHEELS_INSIDE) + "/orchestrator"
    shutil.copy(CHECKOUT / "playbooks" / "debian-sysv.yaml", host.path("/root/sysv.yaml"))
    config = host.path("/etc/orthanc/orthanc.json").read_bytes()
    env = ["env", "ORTHANC_PASSWORD=orthanc"]  # Debian's default user: orthanc/orthanc
    plan = host.exec([*env, tool, "plan", "/root/sysv.yaml"], check=False, timeout=300)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "service manager: sysv" in plan.stdout + plan.stderr
    assert host.path("/etc/orthanc/orthanc.json").read_bytes() == config  # plan changed nothing
    run = host.exec([*env, tool, "run", "/root/sysv.yaml"], check=False, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert host.run("/etc/init.d/orthanc status", check=False).returncode == 0
    assert json.loads(host.http("/statistics"))["CountInstances"] == before
    assert "db-v6-next" in host.path("/etc/orthanc/orthanc.json").read_text()


def test_a_failing_test_still_stops_unmounts_and_deletes_its_host(bookworm_image):
    from tests.harness.debian_host import DebianHost
    with pytest.raises(ZeroDivisionError):
        with DebianHost(bookworm_image, name="doomed") as host:
            nspawn, init = host.nspawn, host.pid
            1 / 0
    assert nspawn.poll() is not None
    assert not Path(f"/proc/{init}").exists()
    assert not os.path.ismount(host.root) and not host.dir.exists()
