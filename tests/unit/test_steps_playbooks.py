"""Every shipped playbook loads against the schema, names it, and builds a safe step list."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.plan import load_plan
from orchestrator.steps import build

PLAYBOOKS = sorted((Path(__file__).resolve().parents[2] / "playbooks").glob("*.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema=../orchestrator/data/plan.schema.json"


def test_the_five_playbooks_are_there():
    assert {p.name for p in PLAYBOOKS} >= {"debian-systemd.yaml", "debian-sysv.yaml",
                                           "debian-package-recovery.yaml", "windows-sc.yaml",
                                           "process.yaml"}


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_is_valid_and_safe(path):
    assert path.read_text().splitlines()[0] == SCHEMA_LINE
    plan = load_plan(path)
    steps = build(plan)
    kinds = [s.kind for s in steps]
    if kinds[0] == "replicate":  # a blue/green move (issue 13): no in-place upgrade
        assert kinds == ["replicate", "catch-up", "freeze", "verify-copy", "switch"]
        return
    assert kinds[0] == "preflight" and kinds[-1] == "health-check"
    up = kinds.index("upgrade")
    assert {"snapshot", "relocate"} & set(kinds[:up]), "no rollback point before the upgrade"
    assert kinds.index("stop-service") < up < kinds.index("start-service")
    if "relocate" in kinds:
        assert kinds.index("stage-links") < kinds.index("stop-service")
