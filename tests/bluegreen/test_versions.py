"""A move across versions: Orthanc 1.10.1 (Debian 12's, the host's) to 1.12.7 (Debian 13's,
from the trixie test image), with the client storing throughout."""

from __future__ import annotations

import json

import pytest

from tests.bluegreen.newer import ChrootOrthanc, trixie_root
from tests.harness.world import World
from tests.bluegreen.test_move import _settle, assert_all_on


@pytest.fixture
def trixie():
    root = trixie_root()
    if root is None:
        pytest.skip("the trixie test image is not built here (tests/harness/debian_host.py)")
    return root


@pytest.mark.parametrize("freeze", ["command", "stop"])
def test_a_move_from_1_10_1_to_1_12_7_loses_nothing(stage_factory, trixie, freeze):
    stage = stage_factory(newer=trixie)
    assert stage.new.version() == "1.12.7"
    before = stage.ids_md5(stage.old.url)
    code, report, err = stage.old.cli("run", str(stage.plan(freeze=freeze)))
    assert code == 0, (report, err)
    _settle(stage)
    there = assert_all_on(stage, stage.new.url)
    assert all(there.get(i) == md5 for i, md5 in before.items())


def test_a_new_server_older_than_the_old_one_is_warned_about(trixie, tmp_path):
    """1.12.7 as the old server, 1.10.1 as the new one: `plan` warns, names both versions."""
    newer = ChrootOrthanc(tmp_path / "newer", trixie)
    older = World(tmp_path / "older")
    try:
        newer.start()
        older.start()
        plan = tmp_path / "plan.yaml"
        plan.write_text(f"version: 1\nstate_dir: {json.dumps(str(tmp_path / 'state'))}\n"
                        f"service: {{name: orthanc-new, manager: process, binary: /usr/sbin/Orthanc,"
                        f" config: {json.dumps(str(newer.root / 'orthanc.json'))}, url: {newer.url}}}\n"
                        f"steps:\n  - replicate: {{to: {older.url}}}\n")
        code, report, err = older.cli("plan", str(plan))
        assert code == 0, (report, err)
        said = json.dumps(report)
        assert "runs Orthanc 1.10.1, older than" in said and "1.12.7" in said
    finally:
        newer.stop()
        older.kill_all()
