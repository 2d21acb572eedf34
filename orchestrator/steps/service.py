"""stop-service and start-service: each the other's undo, through the service port.

Before a stop, the instance IDs the service lists are written to the run's
folder (`instances_before`), so that every later check can prove that nothing
the service held is gone, while new stores are welcome. A stop returns once
the manager proves the service stopped; verify checks again (no live main PID,
the SQLite index not locked) before anything touches the index.

Undoing a stop ends any stop still in progress first (a run killed mid-stop
leaves the old process shutting down: it looks alive, and a moment later
nothing serves), then starts the service and waits until a *new* process
answers /system with its old DatabaseVersion, so "rolled back" means "healthy".
What the manager had to do on the way (a SIGKILL after TimeoutStopSec, a
reset failed state) goes into the facts as `notes`, and so into the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import OrchestratorError, StepError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.index import index_is_locked
from orchestrator.run_report import Downtime
from orchestrator.services import lifetime
from orchestrator.services.base import State
from orchestrator.services.process import Launch, read_launch
from orchestrator.steps.base import (RunContext, StepBase, StepFacts, StepIntent, StepOptions,
                                     done_after)
from orchestrator.steps.healthy import instance_ids, wait_healthy
from orchestrator.steps.kind import StepKind
from orchestrator.steps.record import Json
from orchestrator.steps.preflight import preflight_facts

UNDO_HEALTH_TIMEOUT = 120.0
IDS_FILE = "instances-before-stop.txt"
SERVING_SETTLE = 2.0  # seconds between the two looks that tell serving from shutting down


@dataclass(frozen=True, kw_only=True)
class ServiceOptions(StepOptions):
    timeout: float = 120.0


@dataclass(frozen=True, kw_only=True)
class StopIntent(StepIntent):
    was_running: bool
    main_pid: int | None = None
    pid_started: float | None = None
    manager: str
    launch: dict[str, Json] | None = None  # the process manager's argv and cwd, for a restart


@dataclass(frozen=True, kw_only=True)
class StopFacts(StepFacts):
    stopped_at: float | None = None  # epoch seconds, once the stop is proven


@dataclass(frozen=True, kw_only=True)
class StartFacts(StepFacts):
    main_pid: int | None = None


def _new_notes(host: Host, mark: int) -> tuple[str, ...]:
    return tuple(host.service.notes()[mark:])


def ids_file(ctx: RunContext) -> Path:
    """Where the stop writes the instance IDs the service listed just before it."""
    return ctx.run_dir / IDS_FILE


def instances_before(ctx: RunContext) -> set[str] | None:
    """The instance IDs listed just before the stop (None when they were not read)."""
    return instances_listed(ctx.run_dir)


def instances_listed(run_dir: Path) -> set[str] | None:
    """The instance IDs a run's stop listed (its folder given), or None."""
    try:
        text = (Path(run_dir) / IDS_FILE).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    lines = text.splitlines()
    if not lines or lines[-1] != "end":  # cut short by a crash: unusable
        return None
    return set(lines[:-1])


def _save_ids(host: Host, ctx: RunContext) -> str:
    """Read the service's instance IDs and write them to the run's folder; '' or a warning."""
    try:
        ids = instance_ids(host)
    except Exception as exc:  # noqa: BLE001 - best effort: the stop goes on, counts still count
        return f"the instance IDs could not be read before the stop " \
               f"({getattr(exc, 'message', exc)}): the checks compare counts only"
    # Always asked (a no-op when it exists): a dry run cannot see the folders an earlier
    # step would have made, and must list the same changes as the run.
    host.files.make_dir(ctx.run_dir)
    data = "".join(f"{i}\n" for i in sorted(ids)) + "end\n"
    host.files.write(ids_file(ctx), data.encode("ascii"),
                     f"write the {len(ids)} instance IDs the service holds to {ids_file(ctx)}")
    return ""


def _serving(host: Host, intent: StopIntent) -> bool:
    """True when the old process still serves: /system answers on fresh connections, twice,
    SERVING_SETTLE apart, and the process is the same. An Orthanc told to stop closes its
    listener first (a keep-alive client may hold it for the whole stop grace), so a process
    shutting down fails this, and one whose stop never happened passes it."""
    for attempt in range(2):
        if attempt:
            host.clock.sleep(SERVING_SETTLE)
        client = host.orthanc()
        try:
            client.system()
        except OrchestratorError:
            return False
        finally:
            client.close()
    return not lifetime.is_gone(intent.main_pid, intent.pid_started)


class StopService(StepBase[ServiceOptions, StopIntent, StopFacts]):
    kind = StepKind.STOP_SERVICE
    Options = ServiceOptions
    Intent = StopIntent
    Facts = StopFacts
    downtime = Downtime.BEGINS

    def describe(self) -> str:
        return f"stop the service and prove it stopped (timeout {self.options.timeout:g}s)"

    def intend(self, host: Host, ctx: RunContext) -> StopIntent:
        status = host.service.status()
        launch = read_launch(status.main_pid) \
            if host.service.kind == "process" and status.main_pid else None
        return StopIntent(was_running=status.running, main_pid=status.main_pid,
                          pid_started=host.processes.started_at(status.main_pid),
                          manager=host.service.kind,
                          launch=launch.to_dict() if launch is not None else None)

    def apply(self, host: Host, ctx: RunContext, intent: StopIntent) -> StopFacts:
        if not intent.was_running:
            return StopFacts(summary="already stopped")
        warning = _save_ids(host, ctx)
        mark = len(host.service.notes())
        host.service.stop(timeout=self.options.timeout)
        return StopFacts(summary=f"stopped (PID {intent.main_pid})" if intent.main_pid else "stopped",
                         notes=_new_notes(host, mark), warnings=(warning,) if warning else ())

    def verify(self, host: Host, ctx: RunContext, intent: StopIntent, facts: StopFacts) -> StopFacts:
        status = host.service.status()
        if status.running:
            raise StepError(f"the service still runs after the stop: {status.detail}",
                            hint="stop it by hand and retry")
        if not lifetime.is_gone(intent.main_pid, intent.pid_started):
            raise StepError(f"PID {intent.main_pid} is still alive after the stop",
                            hint=f"kill {intent.main_pid} by hand and retry")
        config = ctx.config()
        if config.index_backend == "sqlite" and index_is_locked(Path(config.index_dir)):
            raise StepError(f"the index in {config.index_dir} is still locked after the stop",
                            hint="another process holds it: find it with `fuser`")
        return replace(facts, stopped_at=time.time())

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None or not intent.was_running:
            return "nothing to undo: it was not running"
        status = host.service.status()
        done = ""
        old_alive = status.running and intent.main_pid is not None and \
            status.main_pid == intent.main_pid and \
            not lifetime.is_gone(intent.main_pid, intent.pid_started)
        if old_alive and _serving(host, intent):
            return (f"still running: PID {intent.main_pid} was never stopped and answers "
                    "/system steadily")
        if status.state == State.STOPPING or old_alive:
            # The old process had its SIGTERM (a run killed mid-stop): it looks alive but no
            # longer serves, and exits in a moment. Finish that stop, then start afresh.
            host.service.stop(timeout=self.options.timeout)
            done = "the old process was still shutting down: stopped it; "
            status = host.service.status()
        if status.running:
            return f"already running again (PID {status.main_pid})"
        manager = host.service.manager
        if host.service.kind == "process":
            # What ran before this run, as journaled before the stop: the manager's own memory
            # may hold a later stop's (the new version's) launch by now.
            manager.launch = Launch.from_dict(intent.launch) or manager.launch
            manager.as_launched = True  # its own binary included
        host.service.start(timeout=self.options.timeout)
        before = preflight_facts(ctx)
        answer = wait_healthy(host, timeout=max(UNDO_HEALTH_TIMEOUT, self.options.timeout),
                              expect_db=before.running_database_version if before else None,
                              old_pid=intent.main_pid if old_alive else None)
        return (f"{done}started again; PID {answer.pid} answers with DatabaseVersion "
                f"{answer.database_version}")

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        if done_after(ctx, record, StepKind.START_SERVICE):
            return None
        status = host.service.status()
        return f"the service runs again ({status.detail})" if status.running else None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return ("start the service (e.g. `systemctl start NAME`, `/etc/init.d/NAME start` or "
                "`sc start NAME`) and check that GET /system answers").replace("NAME", ctx.plan.service.name)


class StartService(StepBase[ServiceOptions, StepIntent, StartFacts]):
    kind = StepKind.START_SERVICE
    Options = ServiceOptions
    Facts = StartFacts
    downtime = Downtime.ENDS

    def describe(self) -> str:
        return f"start the service (timeout {self.options.timeout:g}s)"

    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> StartFacts:
        mark = len(host.service.notes())
        host.service.start(timeout=self.options.timeout)
        return StartFacts(notes=_new_notes(host, mark))

    def verify(self, host: Host, ctx: RunContext, intent: StepIntent, facts: StartFacts) -> StartFacts:
        status = host.service.status()
        if not status.running:
            raise StepError(f"the service is not running after the start: {status.detail}",
                            hint="see the service's log")
        return replace(facts, main_pid=status.main_pid, summary=f"running (PID {status.main_pid})")

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        if host.service.status().state == State.STOPPED:
            return "not running"
        host.service.stop(timeout=self.options.timeout)
        return "stopped"

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        status = host.service.status()
        return None if status.running else f"the service is {status.state.value}"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        return f"stop the service {ctx.plan.service.name} and make sure no Orthanc holds its index"
