"""Faults and refusals of a move, on real servers."""

from __future__ import annotations

import json
import sys

import requests

from tests.bluegreen.front import read_route
from tests.bluegreen.test_move import _settle, assert_all_on
from tests.harness.orthanc import OrthancServer


def _journal_text(stage) -> str:
    return "".join(p.read_text() for p in stage.old.state.rglob("*") if p.is_file()
                   and p.suffix in (".journal", ".json", ""))


def test_a_target_failing_one_post_in_ten_gets_everything_by_retries(stage_factory):
    stage = stage_factory(fail_rate=0.10)
    code, report, err = stage.old.cli("run", str(stage.plan()))
    assert code == 0, (report, err)
    assert stage.flaky.failed > 0
    _settle(stage)
    assert_all_on(stage, stage.new.url)


def test_verify_catches_an_instance_missing_on_the_target_and_the_move_rolls_back(stage_factory):
    stage = stage_factory()
    victim = requests.get(f"{stage.old.url}/instances", timeout=10).json()[0]
    delete = json.dumps([sys.executable, "-c", "import requests, sys; requests.delete(sys.argv[1])",
                         f"{stage.new.url}/instances/{victim}"])
    # A step between catch-up and the freeze loses one instance on the new server.
    plan = stage.old.plan(stage.plan().read_text().split("steps:\n", 1)[1].replace(
        "  - freeze:", f"  - command: {{argv: {delete}}}\n  - freeze:"), name="lossy.yaml")
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 3, (report, err)
    failed = next(s for s in report["steps"] if s["id"] == "verify-copy")
    assert "1 missing" in failed["error"]
    assert read_route(stage.route) == {"port": stage.old.port, "frozen": False}  # thawed
    _settle(stage)
    assert_all_on(stage, stage.old.url)


def test_the_same_server_twice_is_refused(stage_factory):
    stage = stage_factory()
    same = stage.old.url.replace("127.0.0.1", "localhost")  # another URL, the same server
    plan = stage.old.plan(f"  - replicate: {{to: {same}}}\n")
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 1, (report, err)
    assert "the same" in report["error"]
    plan = stage.old.plan(f"  - replicate: {{to: {stage.old.url}}}\n")
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 1 and "the same" in report["error"], (report, err)


def test_a_target_with_data_the_source_lacks_is_refused_with_counts(stage_factory):
    stage = stage_factory()
    from tests.harness.dicom import make_instance
    for n in range(3):
        requests.post(f"{stage.new.url}/instances", timeout=10,
                      data=make_instance(777, 0, 0, n, rows=8, cols=8)).raise_for_status()
    plan = stage.old.plan(f"  - replicate: {{to: {stage.new.url}}}\n")
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 1 and "already holds 3 instances" in report["error"], (report, err)
    allowed = stage.plan(name="allowed.yaml")
    allowed.write_text(allowed.read_text().replace("workers: 4,", "workers: 4, allow_nonempty: true,"))
    code, report, err = stage.old.cli("run", str(allowed))
    assert code == 0, (report, err)
    verify = next(s for s in report["steps"] if s["id"] == "verify-copy")
    assert verify["facts"]["deleted_on_old"] == 0  # its own 3 are not deletions


def test_a_recycling_target_is_refused(stage_factory, tmp_path):
    stage = stage_factory()
    config = tmp_path / "new.json"
    config.write_text(json.dumps({"MaximumPatientCount": 10}))
    plan = stage.old.plan(f"  - replicate: {{to: {stage.new.url}, target_config: {config}}}\n"
                          "")
    code, report, err = stage.old.cli("run", str(plan))
    assert code == 1 and "MaximumPatientCount" in report["error"], (report, err)


def test_the_target_password_is_never_written(stage_factory, tmp_path):
    stage = stage_factory()
    locked = OrthancServer(tmp_path / "locked", username="admin", password="s3cret-pw").start()
    try:
        plan = stage.old.plan(f"  - replicate: {{to: {locked.url}, credentials: {{username: admin,"
                              " password_env: NEW_PW}}\n  - catch-up\n")
        code, report, err = stage.old.cli("run", str(plan), env={"NEW_PW": "s3cret-pw"})
        assert code == 0, (report, err)
        assert "s3cret-pw" not in json.dumps(report) + err + _journal_text(stage)
        assert requests.get(f"{locked.url}/statistics", auth=locked.auth,
                            timeout=10).json()["CountInstances"] >= stage.count
    finally:
        locked.stop()
