"""`plan` and `run` say which service manager they use, and why when it was detected."""

import pytest

pytestmark = pytest.mark.orthanc


def test_plan_names_the_detected_manager_and_the_reason(world_factory):
    w = world_factory().start()
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n  - start-service: {timeout: 60}\n"
                  "  - health-check: {timeout: 60}\n", manager="auto", service_name="orch-no-such-unit")
    rc, report, err = w.cli("plan", str(plan))
    assert rc == 0, err
    note = next(n for n in report["notes"] if n.startswith("service manager:"))
    # No systemd unit and no /etc/init.d script of that name on this host: the process manager.
    assert note.startswith("service manager: process, detected: ")
    assert "/etc/init.d/orch-no-such-unit" in note
    rc, text, err = w.cli("plan", str(plan), json_out=False)
    assert "note: service manager: process, detected:" in text
