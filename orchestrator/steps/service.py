"""stop-service and start-service: each the other's undo, through the service port.

A stop returns once the manager proves the service stopped; verify checks
again (no live main PID, the SQLite index not locked) before anything touches
the index. Undoing a stop starts the service and waits until it answers
/system with its old DatabaseVersion, so "rolled back" means "healthy".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from orchestrator.errors import StepError
from orchestrator.journal import StepRecord
from orchestrator.steps.base import RunContext, StepBase, done_after, preflight_facts, service_config
from orchestrator.steps.health import wait_healthy

UNDO_HEALTH_TIMEOUT = 120.0


class StopService(StepBase):
    kind = "stop-service"

    def describe(self) -> str:
        return f"stop the service and prove it stopped (timeout {self.options.get('timeout', 120):g}s)"

    def intend(self, host: Any, ctx: RunContext) -> dict:
        status = host.service.status()
        return {"was_running": status.running, "main_pid": status.main_pid,
                "pid_started": host.processes.started_at(status.main_pid),
                "manager": host.service.kind}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        if not intent["was_running"]:
            return {"summary": "already stopped"}
        host.service.stop(timeout=float(self.options.get("timeout", 120)))
        return {"summary": f"stopped (PID {intent['main_pid']})" if intent["main_pid"] else "stopped"}

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        from orchestrator.orthanc.index import index_is_locked

        status = host.service.status()
        if status.running:
            raise StepError(f"the service still runs after the stop: {status.detail}",
                            hint="stop it by hand and retry")
        if host.processes.alive(intent.get("main_pid"), intent.get("pid_started")):
            raise StepError(f"PID {intent['main_pid']} is still alive after the stop",
                            hint=f"kill {intent['main_pid']} by hand and retry")
        config = service_config(ctx)
        if config.index_backend == "sqlite" and index_is_locked(Path(config.index_dir)):
            raise StepError(f"the index in {config.index_dir} is still locked after the stop",
                            hint="another process holds it: find it with `fuser`")
        return {"stopped_at": time.time()}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        if not record.intent.get("was_running"):
            return "nothing to undo: it was not running"
        if host.service.status().running:
            return "still running"
        host.service.start(timeout=float(self.options.get("timeout", 120)))
        answer = wait_healthy(host, timeout=max(UNDO_HEALTH_TIMEOUT, float(self.options.get("timeout", 120))),
                              expect_db=preflight_facts(ctx).get("running_database_version"))
        return (f"started again; PID {answer['pid']} answers with DatabaseVersion "
                f"{answer['database_version']}")

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        if done_after(ctx, record, "start-service"):
            return None
        status = host.service.status()
        return f"the service runs again ({status.detail})" if status.running else None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return ("start the service (e.g. `systemctl start NAME`, `/etc/init.d/NAME start` or "
                "`sc start NAME`) and check that GET /system answers").replace("NAME", ctx.plan.service.name)


class StartService(StepBase):
    kind = "start-service"

    def describe(self) -> str:
        return f"start the service (timeout {self.options.get('timeout', 120):g}s)"

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        host.service.start(timeout=float(self.options.get("timeout", 120)))
        return {}

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        status = host.service.status()
        if not status.running:
            raise StepError(f"the service is not running after the start: {status.detail}",
                            hint="see the service's log")
        return {"main_pid": status.main_pid, "summary": f"running (PID {status.main_pid})"}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        from orchestrator.services.base import State

        if host.service.status().state == State.STOPPED:
            return "not running"
        host.service.stop(timeout=float(self.options.get("timeout", 120)))
        return "stopped"

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        status = host.service.status()
        return None if status.running else f"the service is {status.state.value}"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return f"stop the service {ctx.plan.service.name} and make sure no Orthanc holds its index"
