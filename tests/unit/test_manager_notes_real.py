"""A real service manager's note reaches the run's report, its --json form and the journal.

The process manager stops a real process that ignores SIGTERM: it escalates to SIGKILL and
notes it; the engine must show that note (it used to be dropped).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from orchestrator.engine import Engine
from orchestrator.host.clock import RealClock
from orchestrator.host.host import make_host
from orchestrator.host.runner import RealRunner
from orchestrator.journal import Journal
from orchestrator.plan import parse_plan
from orchestrator.services.base import ServiceTarget
from orchestrator.services.process import ProcessManager
from orchestrator.steps import build
from orchestrator.steps.base import RunContext

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def test_a_sigkill_after_an_ignored_sigterm_is_in_the_report_the_json_and_the_journal(tmp_path):
    config = tmp_path / "stubborn.json"
    config.write_text('{"StorageDirectory": "%s"}' % (tmp_path / "db"))
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN, str(config)])
    try:
        time.sleep(0.5)  # let it install its handler
        plan = parse_plan(f"version: 1\nservice:\n  name: stubborn\n  manager: process\n"
                          f"  binary: {sys.executable}\n  config: {config}\n"
                          f"steps:\n  - stop-service: {{timeout: 30}}\n", "plan.yaml",
                          base_dir=tmp_path)
        target = ServiceTarget(name="stubborn", binary=Path(sys.executable), config=config,
                               stop_grace=1.0)
        manager = ProcessManager(target, RealRunner(), RealClock())
        host = make_host(dry=False, manager=manager, orthanc=lambda: None)
        journal = Journal(tmp_path / "stubborn.journal")
        ctx = RunContext(plan, "run-1", tmp_path / "run-1", {})
        report = Engine(build(plan), host, journal, ctx, mode="run").execute()
        assert stubborn.wait(10) == -9
        assert report.exit_code == 0, report.error
        [note] = report.steps[0].notes
        assert "sent SIGKILL" in note and note in report.steps[0].detail
        assert report.to_dict()["steps"][0]["notes"] == [note]
        assert f"stop-service: {note}" in report.notes
        assert journal.last_run().steps["stop-service"].facts["notes"] == [note]
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait(10)
