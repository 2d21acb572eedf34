"""health-check: prove the restarted service is the new one, healthy, with all its data.

It waits (healthy.py) until `/system` answers from the new process, then
DatabaseVersion (and Version when the plan names one) must match, and nothing
held before may be gone, under live traffic: `/statistics` counts may grow but
not shrink from preflight's, and every instance ID listed just before the stop
must still be listed. Then, for a run that may change the binary (or with
`probe: true`), the store probe proves ingest; the counts are read before it.

It only verifies, so a dry run describes it and does not run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from orchestrator.errors import StepError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.binary import binary_version, expected_schema
from orchestrator.run_report import Downtime
from orchestrator.steps.base import (Needs, RunContext, StepBase, StepFacts, StepIntent,
                                     StepOptions, counts_text, latest)
from orchestrator.steps.healthy import (Answer, instance_ids, kept, probe_store, rest_counts,
                                        wait_healthy)
from orchestrator.steps.kind import StepKind
from orchestrator.steps.preflight import preflight_facts
from orchestrator.steps.record import Record
from orchestrator.steps.service import StopFacts, StopIntent, instances_before

RESUME_TIMEOUT = 60.0  # seconds `resume` waits for a done health check to hold again
BINARY_CHANGERS = ("package", "command")  # step kinds that may replace the Orthanc binary


@dataclass(frozen=True, kw_only=True)
class Expect(Record):
    database_version: int | None = None
    version: str | None = None
    counts: bool = True


@dataclass(frozen=True, kw_only=True)
class HealthOptions(StepOptions):
    timeout: float = 300.0
    expect: Expect = field(default_factory=Expect)
    probe: bool | None = None  # None: probe when the run may change the binary


@dataclass(frozen=True, kw_only=True)
class HealthFacts(StepFacts):
    health: Answer | None = None
    counts: dict[str, int] | None = None
    probe: str | None = None


class HealthCheck(StepBase[HealthOptions, StepIntent, HealthFacts]):
    kind = StepKind.HEALTH_CHECK
    Options = HealthOptions
    Facts = HealthFacts
    downtime = Downtime.ENDS

    def describe(self) -> str:
        expect = self.options.expect
        parts = ["poll /system until the new process answers"]
        if expect.database_version is not None:
            parts.append(f"DatabaseVersion {expect.database_version}")
        if expect.version:
            parts.append(f"Version {expect.version}")
        if expect.counts:
            parts.append("nothing gone (counts not shrunk, every instance ID still listed)")
        if self.options.probe:
            parts.append("store probe (store, read back, delete a synthetic instance)")
        elif self.options.probe is None:
            parts.append("store probe if the binary changed")
        return ", ".join(parts)

    def needs(self, ctx: RunContext) -> Needs:
        return Needs(expects_version=self.options.expect.version)

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        """For `resume`: the service must answer healthy now, not only when it was checked."""
        try:
            wait_healthy(host, timeout=min(self.options.timeout, RESUME_TIMEOUT),
                         expect_db=self._expect_db(host, ctx),
                         expect_version=self.options.expect.version)
        except StepError as exc:
            return exc.message
        return None

    def _expect_db(self, host: Host, ctx: RunContext) -> int:
        if self.options.expect.database_version is not None:
            return self.options.expect.database_version
        # The binary may have been replaced since preflight (a package step): read it again.
        return expected_schema(binary_version(ctx.plan.service.binary, host.runner))

    def verify(self, host: Host, ctx: RunContext, intent: StepIntent, facts: HealthFacts) -> HealthFacts:
        expect = self.options.expect
        expect_db = self._expect_db(host, ctx)
        stop = latest(ctx, StepKind.STOP_SERVICE)
        stop_intent = StopIntent.from_json(stop.intent) if stop and stop.intent else None
        stop_facts = StopFacts.from_json(stop.facts) if stop and stop.facts else None
        answer = wait_healthy(
            host, timeout=self.options.timeout, expect_db=expect_db, expect_version=expect.version,
            not_before=stop_facts.stopped_at if stop_facts else None,
            old_pid=stop_intent.main_pid if stop_intent else None)
        before = preflight_facts(ctx)
        after, grew = None, ""
        if expect.counts and before is not None and before.counts:
            after = rest_counts(host)
            ids = instances_before(ctx)
            try:
                grew = kept(before.counts, after, ids, instance_ids(host) if ids is not None else None)
            except StepError as exc:
                raise StepError(exc.message, hint="the upgraded index does not hold the same "
                                                  "data: rolled back") from None
        probed = probe_store(host) if wants_probe(self.options, ctx) else None
        notes = tuple(n for n in (grew, probed) if n)
        return replace(facts, health=answer, counts=after, probe=probed, notes=notes,
                       summary=f"PID {answer.pid} answers: Orthanc {answer.version}, "
                               f"DatabaseVersion {answer.database_version}"
                               + (f", {counts_text(after)}" if after is not None else ""))


def wants_probe(options: HealthOptions, ctx: RunContext) -> bool:
    """The store probe runs when asked (`probe: true`), or by default when the run may change
    the binary: a package or command step, or a binary that is not the running one."""
    if options.probe is not None:
        return options.probe
    if any(str(s.kind) in BINARY_CHANGERS for s in ctx.steps):
        return True
    before = preflight_facts(ctx)
    return bool(before and before.running_version
                and before.running_version != before.binary_version)
