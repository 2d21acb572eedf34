"""One lock per Orthanc, through the CLI: while another process holds the server's lock (as a
run under another service name and state folder would), `run` refuses with exit 5 naming it,
and changes nothing (real Orthanc under the process manager)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness.world import sha256

pytestmark = pytest.mark.orthanc

ROOT = Path(__file__).resolve().parents[2]
HOLDER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from orchestrator.lock import OrthancLock
    with OrthancLock.for_sqlite(sys.argv[2]).acquire("run", service="other-name",
                                                     state_dir=sys.argv[3]):
        print("held", flush=True)
        sys.stdin.read()
""")


def test_run_refuses_while_another_run_holds_the_same_orthanc(world_factory, tmp_path):
    w = world_factory().start()
    locks = tmp_path / "locks"
    plan = w.plan("  - preflight\n  - stop-service: {timeout: 60}\n"
                  f"  - relocate: {{to: {json.dumps(str(w.db.parent / 'db-v7'))}}}\n"
                  "  - start-service: {timeout: 60}\n  - health-check: {timeout: 60}\n")
    before = (sha256(w.config), sha256(w.db / "index"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), str(w.db),
                               str(tmp_path / "other-state")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "ORCHESTRATOR_LOCK_DIR": str(locks)})
    try:
        assert holder.stdout.readline().strip() == "held"
        for command in ("run", "rollback", "revert"):  # every command that changes the Orthanc
            rc, out, err = w.cli(command, str(plan), env={"ORCHESTRATOR_LOCK_DIR": str(locks)})
            assert rc == 5, (command, out, err)
            assert f"pid {holder.pid}" in err and "other-name" in err, (command, err)
            assert (sha256(w.config), sha256(w.db / "index")) == before
        assert w.counts() is not None  # still serving
    finally:
        holder.stdin.close()
        holder.wait(30)
