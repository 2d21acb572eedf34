"""Nothing acknowledged is ever dropped (issue 12 item 2), against a real Orthanc 1.10.1.

A client stores an instance every ~50 ms for the whole `run`; the health check is forced to
fail (it expects DatabaseVersion 99), so the run rolls itself back. Every instance the
service answered 200 for, before, during and after the upgrade, must end on the rolled-back
service with the same MD5: the old folder keeps what the old version took, and what the new
version took (in its folder, moved aside by the rollback) is carried back.
"""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
import requests

from tests.harness.dicom import make_dataset, make_instance

pytestmark = pytest.mark.orthanc

PLAN = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{to: {to}}}
  - upgrade: {{timeout: 120, stall: 20}}
  - start-service: {{timeout: 60}}
  - command: {{argv: [/bin/sleep, "2"]}}
  - health-check: {{timeout: 60, expect: {{database_version: 99}}}}
"""


class Client(threading.Thread):
    """Store a new instance every ~50 ms; remember each one answered 200 (ID -> MD5)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.acked: dict[str, str] = {}
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.halt.wait(0.05):
            n += 1
            data = make_instance(900, 1, 1, n, rows=8, cols=8, seed="live-traffic")
            try:
                # A fresh connection per store: the service's stop is not held by a keep-alive.
                r = requests.post(f"{self.url}/instances", data=data, timeout=10,
                                  headers={"Connection": "close"})
            except requests.RequestException:
                self.refused += 1
                continue
            if r.status_code == 200:
                self.acked[r.json()["ID"]] = hashlib.md5(data).hexdigest()
            else:
                self.refused += 1


def test_every_acknowledged_instance_survives_an_automatic_rollback(world_factory):
    w = world_factory().start()
    w.upload(make_dataset(6, per_series=3, rows=16, cols=16))
    plan = w.plan(PLAN.format(to=json.dumps(str(w.db.parent / "db-v7"))),
                  service_extra="  stop_grace: 10\n")
    client = Client(w.url)
    client.start()
    try:
        rc, report, err = w.cli("run", str(plan))
    finally:
        client.halt.set()
        client.join(30)
    assert rc == 3, (report, err)
    assert "expected 99" in report["error"]
    notes = " ".join(report["notes"])
    assert "the service is back" in notes and "nothing held before the run is gone" in notes
    assert "store probe" in notes  # the plan's command step may change the binary
    assert client.acked, "the client never got a 200"
    missing, different = [], []
    for iid, md5 in client.acked.items():
        r = requests.get(f"{w.url}/instances/{iid}/attachments/dicom/md5", timeout=10)
        if r.status_code != 200:
            missing.append(iid)
        elif r.text.strip().strip('"') != md5:
            different.append(iid)
    assert not missing and not different, (len(client.acked), missing[:5], different[:5], notes)
    carried = [n for n in report["notes"] if "carried back" in n]
    aside = list(w.db.parent.glob("db-v7.rolled-back-*"))
    assert aside, "the new version's folder is kept for inspection"
    print(f"\nlive traffic: {len(client.acked)} acknowledged, {client.refused} refused; "
          f"{carried or 'nothing to carry back'}")


def test_the_health_check_lets_counts_grow_under_live_traffic(world_factory):
    w = world_factory().start()
    w.upload(make_dataset(6, per_series=3, rows=16, cols=16))
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n  - start-service\n"
                  "  - command: {argv: [/bin/sleep, \"1\"]}\n  - health-check: {timeout: 60}\n",
                  service_extra="  stop_grace: 10\n")
    client = Client(w.url)
    client.start()
    try:
        rc, report, err = w.cli("run", str(plan))
    finally:
        client.halt.set()
        client.join(30)
    assert rc == 0, (report, err)
    health = next(s for s in report["steps"] if s["id"] == "health-check")
    assert "store probe" in health["detail"], health
    for iid in client.acked:
        assert requests.get(f"{w.url}/instances/{iid}", timeout=10).status_code == 200
