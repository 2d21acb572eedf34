"""`switch: {how: ports}` on two real Orthanc 1.10.1 servers of one host: the new server takes
the old one's HTTP and DICOM ports, so clients keep their address; `revert` a day later gives
the ports back and carries back what the new server received. A client stores at the old
address throughout; each of its 200s is asserted on the server that serves at the end."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.bluegreen.client import WritingClient
from tests.bluegreen.front import read_route
from tests.bluegreen.test_move import _settle, assert_all_on
from tests.harness.dicom import make_dataset
from tests.harness.orthanc import ORTHANC_BINARY, free_port
from tests.harness.world import World

CRASH = "ORCHESTRATOR_TEST_CRASH_AT"


class PortsStage:
    """Two worlds on one host, each with its DICOM server on; a client at the old address."""

    def __init__(self, root):
        self.old = World(root / "old", overrides={"DicomServerEnabled": True,
                                                  "DicomPort": free_port()})
        self.new = World(root / "new", overrides={"DicomServerEnabled": True,
                                                  "DicomPort": free_port()})
        self.new_bytes = self.new.config.read_bytes()
        self.client: WritingClient | None = None

    def start(self) -> PortsStage:
        self.old.start()
        self.old.upload(make_dataset(60, rows=32, cols=32))
        self.new.start()
        self.client = WritingClient(self.old.url).start()
        return self

    def plan(self) -> str:
        new_service = json.dumps({"name": "orthanc-new", "manager": "process",
                                  "binary": ORTHANC_BINARY, "config": str(self.new.config),
                                  "log_file": str(self.new.root / "service.log")})
        steps = (f"  - replicate: {{to: {self.new.url}, workers: 4}}\n"
                 f"  - catch-up: {{instances: 30, seconds: 2}}\n"
                 f"  - freeze: {{how: stop, timeout: 60}}\n"
                 f"  - verify-copy\n"
                 f"  - switch: {{how: ports, new_service: {new_service}}}\n")
        return str(self.old.plan(steps))

    def ids_md5(self, url: str) -> dict[str, str]:
        ids = requests.get(f"{url}/instances", timeout=30).json()
        return {i: requests.get(f"{url}/instances/{i}/attachments/dicom/md5", timeout=30).text
                for i in ids}

    def assert_client_on(self, url: str) -> None:
        there = self.ids_md5(url)
        stored = dict(self.client.stored)
        assert stored, "the client stored nothing"
        missing = [i for i in stored if i not in there]
        assert not missing, f"{len(missing)} of the client's instances are missing on {url}"
        assert all(there[i] == md5 for i, md5 in stored.items())

    def stop(self) -> None:
        if self.client:
            self.client.stop()
        self.old.kill_all()
        self.new.kill_all()


@pytest.fixture
def ports_stage(tmp_path):
    stage = PortsStage(tmp_path)
    try:
        yield stage.start()
    finally:
        stage.stop()


def _dicom_port(world: World) -> int:
    return json.loads(world.config.read_text().replace("// written by the test world", ""))[
        "DicomPort"]


def _listens(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _name_at(url: str) -> str:
    return requests.get(f"{url}/system", timeout=10).json()["Name"]


def test_the_new_server_takes_the_old_ports_and_revert_gives_them_back(ports_stage):
    stage = ports_stage
    old_http, old_dicom = stage.old.port, _dicom_port(stage.old)
    new_http, new_dicom = stage.new.port, _dicom_port(stage.new)
    new_name = _name_at(stage.new.url)

    code, report, err = stage.old.cli("run", stage.plan())
    assert code == 0, (report, err)
    steps = {s["id"]: s for s in report["steps"]}
    assert steps["switch"]["facts"]["write_freeze_s"] > 0
    # The old address is now served by the new server, on both ports; the old one is stopped.
    assert _name_at(stage.old.url) == new_name
    assert not stage.old.processes()
    assert _listens(old_dicom)
    config = stage.new.config.read_text()
    assert f'"HttpPort": {old_http}' in config and f'"DicomPort": {old_dicom}' in config
    assert "// written by the test world" in config  # the rest of the file kept
    time.sleep(1.0)  # the client goes on storing at its address, now on the new server
    arrived = set(stage.client.stored)
    assert arrived <= set(stage.ids_md5(stage.old.url))

    code, report, err = stage.old.cli("revert", stage.plan())
    assert code == 0, (report, err)
    assert "carried back to the old server" in json.dumps(report)
    assert not list(stage.old.state.rglob("carry"))  # the upgrade's carry-back is not used
    # Each server on its own ports again, the new one's configuration byte for byte.
    assert stage.new.config.read_bytes() == stage.new_bytes
    assert _name_at(stage.new.url) == new_name and _name_at(stage.old.url) != new_name
    assert _listens(new_dicom) and _listens(old_dicom)
    assert stage.old.processes()
    assert new_http != old_http
    # Everything the client stored, before, after and during the revert, is on the old server.
    time.sleep(0.5)
    stage.client.stop()
    stage.assert_client_on(stage.old.url)
    assert arrived <= set(stage.ids_md5(stage.old.url))


def test_a_dry_run_of_a_ports_switch_changes_nothing(ports_stage):
    stage = ports_stage
    code, report, err = stage.old.cli("plan", stage.plan())
    assert code == 0, (report, err)
    text = json.dumps(report)
    assert "orthanc-new" in text and f"HttpPort {stage.old.port}" in text
    assert stage.new.config.read_bytes() == stage.new_bytes
    assert stage.old.processes() and stage.new.processes()
    assert _name_at(stage.old.url) != _name_at(stage.new.url)


def test_kill_during_the_ports_switch_then_rollback_restores_both(ports_stage):
    stage = ports_stage
    plan = stage.plan()
    code, _, err = stage.old.cli("run", plan, env={CRASH: "switch:during"})
    assert code == -9, err
    code, report, err = stage.old.cli("rollback", plan)
    assert code == 0, (report, err)
    assert stage.new.config.read_bytes() == stage.new_bytes
    assert _name_at(stage.old.url) != _name_at(stage.new.url)
    stage.client.stop()
    stage.assert_client_on(stage.old.url)


def test_a_new_server_that_is_not_the_replicate_target_is_refused(ports_stage, tmp_path):
    stage = ports_stage
    other = World(tmp_path / "other")
    text = open(stage.plan()).read()
    path = stage.old.root / "other.yaml"
    path.write_text(text.replace(json.dumps(str(stage.new.config)), json.dumps(str(other.config))))
    code, report, err = stage.old.cli("plan", str(path))
    assert code != 0
    assert "replicate.to and switch.new_service must name one server" in json.dumps(report) + err


def test_revert_of_a_finished_move_behind_a_load_balancer(stage_factory):
    """The `command` switch: revert runs the admin's undo (clients back to the old server,
    still frozen), carries back what the new server got, then lifts the freeze."""
    stage = stage_factory()
    plan = str(stage.plan())
    code, report, err = stage.old.cli("run", plan)
    assert code == 0, (report, err)
    time.sleep(1.0)  # the client stores on the new server now
    arrived = [i for i in list(stage.client.stored) if i not in stage.ids_md5(stage.old.url)]
    assert arrived, "nothing arrived on the new server after the switch"
    code, report, err = stage.old.cli("revert", plan)
    assert code == 0, (report, err)
    assert read_route(stage.route) == {"port": stage.old.port, "frozen": False}
    _settle(stage)
    assert_all_on(stage, stage.old.url)
    code, report, err = stage.old.cli("revert", plan)
    assert code != 0 and "is a revert already" in json.dumps(report) + err
