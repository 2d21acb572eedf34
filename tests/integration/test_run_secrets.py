"""A successful run with credentials: the password reaches no journal, report or output."""

import pytest

pytestmark = pytest.mark.orthanc

PASSWORD = "Zk7-very-secret-pw"


def test_password_reaches_no_journal_or_output(world_factory):
    w = world_factory(auth=("admin", PASSWORD)).start()
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n  - snapshot\n"
                  "  - upgrade: {timeout: 120, stall: 30}\n  - start-service: {timeout: 60}\n"
                  "  - health-check: {timeout: 60}\n",
                  service_extra="  credentials: {username: admin, password_env: ORCH_TEST_PW}\n")
    rc, report, err = w.cli("run", str(plan), env={"ORCH_TEST_PW": PASSWORD})
    assert rc == 0, err
    rc2, text, err2 = w.cli("status", "--state-dir", str(w.state), json_out=False)
    outputs = str(report) + err + text + err2
    assert PASSWORD not in outputs
    # The journal, lock and run folder (snapshot, upgrade log) hold no password; the config
    # backup is a byte copy of the config, which holds RegisteredUsers by design, so skip it.
    for path in w.state.rglob("*"):
        if path.is_file() and "config-backup" not in path.parts:
            assert PASSWORD.encode() not in path.read_bytes(), path
