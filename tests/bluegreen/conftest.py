"""A blue/green stage: an old Orthanc (a World, run by the process manager, holding data), a
new empty Orthanc, a front (the clients' address, the admin's load balancer) routed to the old
one, and a client storing through the front. Everything is stopped by PID at teardown."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import requests

from tests.bluegreen.client import WritingClient
from tests.bluegreen.front import Front, write_route
from tests.bluegreen.newer import ChrootOrthanc
from tests.harness.dicom import make_dataset
from tests.harness.orthanc import OrthancServer
from tests.harness.world import World

CTL = str(Path(__file__).with_name("front_ctl.py"))


class Stage:
    def __init__(self, root: Path, *, fail_rate: float = 0.0, count: int = 120,
                 newer: Path | None = None):
        self.root = root
        self.old = World(root / "old")
        # The new server: another 1.10.1 process, or 1.12.7 from the trixie image's root.
        self.new = ChrootOrthanc(root / "new", newer) if newer else OrthancServer(root / "new")
        self.route = root / "route.json"
        self.front: Front | None = None
        self.client: WritingClient | None = None
        self.flaky: Front | None = None
        self.fail_rate, self.count = fail_rate, count

    def start(self) -> Stage:
        self.old.start()
        self.old.upload(make_dataset(self.count, rows=32, cols=32))
        self.new.start()
        write_route(self.route, self.old.port, False)
        self.front = Front(self.route).start()
        if self.fail_rate:
            # The new server as the tool sees it: 10 % of its POSTs fail.
            flaky_route = self.root / "flaky.json"
            write_route(flaky_route, self.new.port, False)
            self.flaky = Front(flaky_route, fail_rate=self.fail_rate).start()
        self.client = WritingClient(self.front.url).start()
        return self

    @property
    def target_url(self) -> str:
        return self.flaky.url if self.flaky else self.new.url

    def ctl(self, *args: str) -> str:
        return json.dumps([sys.executable, CTL, str(self.route), *args])

    def plan(self, *, freeze: str = "command", switch: str = "command", extra: str = "",
             name: str = "plan.yaml") -> Path:
        if freeze == "command":
            freeze_step = (f"  - freeze: {{how: command, argv: {self.ctl('freeze')}, "
                           f"undo: {self.ctl('thaw')}}}\n")
        else:
            freeze_step = f"  - freeze: {{how: {freeze}, timeout: 60}}\n"
        if switch == "command":
            switch_step = (f"  - switch: {{how: command, argv: {self.ctl('route', str(self.new.port))},"
                           f" undo: {self.ctl('route', str(self.old.port), 'frozen')}}}\n")
        else:
            switch_step = "  - switch\n"
        steps = (f"  - replicate: {{to: {self.target_url}, workers: 4, retries: 3}}\n"
                 f"  - catch-up: {{instances: 30, seconds: 2}}\n"
                 f"{freeze_step}"
                 f"  - verify-copy\n"
                 f"{extra}"
                 f"{switch_step}")
        return self.old.plan(steps, name=name)

    def ids_md5(self, url: str) -> dict[str, str]:
        ids = requests.get(f"{url}/instances", timeout=30).json()
        return {i: requests.get(f"{url}/instances/{i}/attachments/dicom/md5", timeout=30).text
                for i in ids}

    def stop(self) -> None:
        if self.client:
            self.client.stop()
        for front in (self.front, self.flaky):
            if front:
                front.stop()
        self.old.kill_all()
        self.new.stop()


@pytest.fixture
def stage_factory(tmp_path):
    made: list[Stage] = []

    def make(**kw) -> Stage:
        stage = Stage(tmp_path / f"s{len(made)}", **kw)
        made.append(stage)
        return stage.start()

    yield make
    for stage in made:
        stage.stop()
