"""kill -9 of the tool in each phase of a move, then `status` and `rollback` (or `resume`): the
client's every 200 is on the server that serves at the end, with its MD5."""

from __future__ import annotations

import time

import pytest
import requests

from tests.bluegreen.front import read_route
from tests.bluegreen.test_move import _settle, assert_all_on

CRASH = "ORCHESTRATOR_TEST_CRASH_AT"


def _crash(stage, plan, point: str) -> None:
    code, _, err = stage.old.cli("run", str(plan), env={CRASH: point})
    assert code == -9, err
    code, status, err = stage.old.cli("status", str(plan))
    assert code == 5 and status["ok"] is False, (status, err)  # an open run, nobody on it


@pytest.mark.parametrize("point", ["replicate:during", "freeze:during", "verify-copy:before"])
def test_kill_before_the_switch_then_rollback_leaves_the_old_server_serving(stage_factory, point):
    stage = stage_factory()
    plan = stage.plan()
    _crash(stage, plan, point)
    code, report, err = stage.old.cli("rollback", str(plan))
    assert code == 0, (report, err)
    assert read_route(stage.route) == {"port": stage.old.port, "frozen": False}
    _settle(stage)
    assert_all_on(stage, stage.old.url)


def test_kill_after_the_switch_then_rollback_carries_back_what_arrived(stage_factory):
    stage = stage_factory()
    plan = stage.plan()
    _crash(stage, plan, "switch:after")
    time.sleep(1.0)  # the client stores on the new server meanwhile
    on_old = stage.ids_md5(stage.old.url)
    arrived = [i for i in list(stage.client.stored) if i not in on_old]
    code, report, err = stage.old.cli("rollback", str(plan))
    assert code == 0, (report, err)
    assert read_route(stage.route) == {"port": stage.old.port, "frozen": False}
    _settle(stage)
    assert_all_on(stage, stage.old.url)
    assert arrived, "nothing arrived on the new server between the switch and the kill"


def test_kill_during_catch_up_then_resume_finishes_the_move(stage_factory):
    stage = stage_factory()
    plan = stage.plan()
    _crash(stage, plan, "catch-up:during")
    code, report, err = stage.old.cli("resume", str(plan))
    assert code == 0, (report, err)
    _settle(stage)
    assert_all_on(stage, stage.new.url)


def test_a_read_only_freeze_then_kill_and_rollback_puts_the_config_back(stage_factory):
    stage = stage_factory()
    config_before = stage.old.config.read_bytes()
    plan = stage.plan(freeze="config")
    _crash(stage, plan, "verify-copy:before")  # frozen: restarted read-only, rest copied
    assert stage.old.config.read_bytes() != config_before
    assert requests.post(f"{stage.old.url}/instances", data=b"x", timeout=10).status_code == 403
    assert requests.get(f"{stage.old.url}/statistics", timeout=10).status_code == 200
    code, report, err = stage.old.cli("rollback", str(plan))
    assert code == 0, (report, err)
    assert stage.old.config.read_bytes() == config_before  # byte for byte
    _settle(stage, 2.0)
    assert_all_on(stage, stage.old.url)  # and it takes writes again
