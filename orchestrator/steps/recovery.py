"""The proof that ends every rollback: the old service is back, whole, and can store.

A rollback is only reported as done (exit 0 for `rollback`, 3 for a run that
rolled itself back) once this proof holds; otherwise the engine reports it
incomplete (exit 4) with `manual_steps`. The proof, after every undo ran:

1. the service runs when it ran before the run, and answers /system with the old
   DatabaseVersion (the undo of the stop has told a process still shutting down from
   one that was never stopped, and restarted the first);
2. what the rolled-back version acknowledged is carried back (carry_back.py);
3. nothing is gone: the counts did not shrink from preflight's and every instance
   listed before the stop is still listed (new stores are welcome);
4. the store probe, when the plan's health check would probe;
5. the service still runs, with the same main PID, a moment later.
"""

from __future__ import annotations

from orchestrator.errors import StepError
from orchestrator.host.host import Host
from orchestrator.services.base import State
from orchestrator.steps.base import RunContext
from orchestrator.steps.carry_back import carry_back, left_behind
from orchestrator.steps.health import HealthOptions, wants_probe
from orchestrator.steps.healthy import instance_ids, kept, probe_store, rest_counts, wait_healthy
from orchestrator.steps.kind import StepKind
from orchestrator.steps.preflight import preflight_facts
from orchestrator.steps.service import UNDO_HEALTH_TIMEOUT, StopIntent, instances_before

SETTLE = 1.0  # seconds the answering process must still run at the end


def prove_restored(host: Host, ctx: RunContext, *, timeout: float = UNDO_HEALTH_TIMEOUT) -> list[str]:
    """Prove the rolled-back service healthy and whole (see the module); return the notes to
    report, or raise StepError saying what does not hold."""
    before = preflight_facts(ctx)
    stop = next((r for r in ctx.records.values()
                 if r.kind == StepKind.STOP_SERVICE and r.intent), None)
    intent = StopIntent.from_json(stop.intent) if stop is not None else None
    was_running = intent.was_running if intent is not None else \
        bool(before and before.service.get("state") == State.RUNNING.value)
    if not was_running:
        status = host.service.status()
        return [] if not status.running else [f"the service runs (PID {status.main_pid}); it "
                                              "did not before the run"]
    answer = wait_healthy(host, timeout=timeout,
                          expect_db=before.running_database_version if before else None)
    notes = [f"the service is back: PID {answer.pid} answers with Orthanc {answer.version}, "
             f"DatabaseVersion {answer.database_version}"]
    for folder in left_behind(ctx):
        done = carry_back(host, folder)
        if done.carried:
            notes.append(done.text())
    if before is not None and before.counts:
        ids = instances_before(ctx)
        grew = kept(before.counts, rest_counts(host), ids,
                    instance_ids(host) if ids is not None else None)
        notes.append("nothing held before the run is gone" + (f"; {grew}" if grew else ""))
    health = next((s for s in ctx.steps if s.kind == StepKind.HEALTH_CHECK), None)
    options = health.options if health is not None and isinstance(health.options, HealthOptions) \
        else HealthOptions()
    if wants_probe(options, ctx):
        notes.append(probe_store(host))
    host.clock.sleep(SETTLE)  # a process on its way out would show it now
    status = host.service.status()
    if not status.running or (answer.pid is not None and status.main_pid != answer.pid):
        raise StepError(f"the service stopped again after it answered (PID {answer.pid}; now "
                        f"{status.state.value}, {status.detail})",
                        hint="see the service's log")
    return notes


def manual_restore(ctx: RunContext) -> list[str]:
    """What the operator must do when the proof failed."""
    before = preflight_facts(ctx)
    name = ctx.plan.service.name
    db = before.running_database_version if before else None
    return [f"make sure the service {name} runs (e.g. `systemctl start {name}`, "
            f"`/etc/init.d/{name} start`, or start Orthanc with its config) and that GET /system "
            "answers" + (f" with DatabaseVersion {db}" if db is not None else ""),
            "check that GET /statistics shows at least the counts of before the run"
            + (f" ({before.summary})" if before and before.summary else "")]
