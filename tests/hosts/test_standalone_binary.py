"""A standalone newer binary (`binary:` pointed at it) in a process-manager plan, on a real
Debian 13 host: sid's 1.13.0, extracted with its libraries into /opt/sid and run through a
small wrapper named Orthanc, takes over an index 1.12.7 served; its health check fails, and
the rollback must put 1.12.7 back on the snapshot (1.13.0 altered the index: the old binary
on the altered index would fail every store)."""

from __future__ import annotations

import json
import time


from tests.harness.debian_host import VERSIONS
from tests.hosts.conftest import WHEELS_INSIDE
from tests.hosts.test_package_step import TOOL

SID = VERSIONS["sid"]
EXTRACT = f"""set -e
mkdir -p /opt/sid/bin
apt-get install -s -q -t sid orthanc={SID} \\
  | sed -n 's/^Inst \\([^ ]*\\) .*(\\([^ ]*\\) .*unstable.*/\\1 \\2/p' | while read name version; do
    dpkg-deb -x "$(ls /var/cache/apt/archives/${{name}}_*"${{version#*:}}"_*.deb | head -1)" /opt/sid
  done
cat > /opt/sid/bin/Orthanc <<'WRAP'
#!/bin/sh
export LD_LIBRARY_PATH=/opt/sid/usr/lib/x86_64-linux-gnu:/opt/sid/lib/x86_64-linux-gnu
export DCMDICTPATH=/opt/sid/usr/share/dcmtk/dicom.dic
exec /opt/sid/usr/sbin/Orthanc "$@"
WRAP
chmod 755 /opt/sid/bin/Orthanc
"""
CONFIG = {"Name": "PM", "StorageDirectory": "/root/pm/db", "IndexDirectory": "/root/pm/db",
          "HttpPort": 8043, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
          "DicomServerEnabled": False, "Plugins": []}
PLAN = """version: 1
state_dir: /var/lib/orchestrator
service:
  name: pm
  manager: process
  binary: /opt/sid/bin/Orthanc
  config: /root/pm/orthanc.json
  url: http://127.0.0.1:8043
steps:
  - preflight
  - stop-service: {timeout: 60}
  - snapshot
  - start-service: {timeout: 60}
  - health-check: {timeout: 30, expect: {database_version: 7}}
"""


def _store(host, patient: str) -> str:
    body = json.dumps({"Tags": {"PatientID": patient}})
    return json.loads(host.http("/tools/create-dicom", method="POST", data=body, port=8043))["ID"]


def _wait(host, version: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        got = host.exec(["curl", "-sf", "http://localhost:8043/system"], check=False)
        if got.returncode == 0 and json.loads(got.stdout)["Version"] == version:
            return
        assert time.monotonic() < deadline, got.stdout
        time.sleep(0.2)


def test_a_standalone_1_13_binary_rolls_back_to_the_old_binary_on_the_copy(
        trixie_image, wheels_trixie, host_factory):
    host = host_factory(trixie_image, wheels_trixie, name="standalone")
    host.install_tool(WHEELS_INSIDE)
    host.run(EXTRACT, timeout=300)
    assert "1.13.0" in host.run("/opt/sid/bin/Orthanc --version").stdout
    host.run("systemctl stop orthanc && mkdir -p /root/pm/db")
    host.path("/root/pm/orthanc.json").write_text(json.dumps(CONFIG))
    host.run("cd / && setsid nohup /usr/sbin/Orthanc /root/pm/orthanc.json > /root/pm/old.log "
             "2>&1 < /dev/null &")
    _wait(host, "1.12.7")
    kept = {_store(host, f"PM{i}") for i in range(2)}
    host.path("/root/pm.yaml").write_text(PLAN)

    done = host.exec([TOOL, "run", "/root/pm.yaml"], check=False, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 3, out  # 1.13.0 started, its health check failed, rolled back
    assert "index restored from" in out
    _wait(host, "1.12.7")  # the old binary, on the snapshot
    assert kept <= set(json.loads(host.http("/instances", port=8043)))
    _store(host, "AFTER-ROLLBACK")  # stores work: the old binary never sees 1.13.0's index
