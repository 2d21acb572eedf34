"""health-check: prove the restarted service is the new one, healthy, with all its data.

It waits (healthy.py) until `/system` answers from the new process, then
DatabaseVersion (and Version when the plan names one) must match, and
`/statistics` counts must equal preflight's.

It only verifies, so a dry run describes it and does not run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from orchestrator.errors import StepError
from orchestrator.host.host import Host
from orchestrator.orthanc.binary import binary_version, expected_schema
from orchestrator.run_report import Downtime
from orchestrator.steps.base import (Needs, RunContext, StepBase, StepFacts, StepIntent,
                                     StepOptions, counts_text, latest)
from orchestrator.steps.healthy import Answer, rest_counts, wait_healthy
from orchestrator.steps.kind import StepKind
from orchestrator.steps.preflight import preflight_facts
from orchestrator.steps.record import Record
from orchestrator.steps.service import StopFacts, StopIntent


@dataclass(frozen=True, kw_only=True)
class Expect(Record):
    database_version: int | None = None
    version: str | None = None
    counts: bool = True


@dataclass(frozen=True, kw_only=True)
class HealthOptions(StepOptions):
    timeout: float = 300.0
    expect: Expect = field(default_factory=Expect)


@dataclass(frozen=True, kw_only=True)
class HealthFacts(StepFacts):
    health: Answer | None = None
    counts: dict[str, int] | None = None


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
            parts.append("counts as before")
        return ", ".join(parts)

    def needs(self, ctx: RunContext) -> Needs:
        return Needs(expects_version=self.options.expect.version)

    def verify(self, host: Host, ctx: RunContext, intent: StepIntent, facts: HealthFacts) -> HealthFacts:
        expect = self.options.expect
        expect_db = expect.database_version
        if expect_db is None:
            # The binary may have been replaced since preflight (a package step): read it again.
            expect_db = expected_schema(binary_version(ctx.plan.service.binary, host.runner))
        stop = latest(ctx, StepKind.STOP_SERVICE)
        stop_intent = StopIntent.from_json(stop.intent) if stop and stop.intent else None
        stop_facts = StopFacts.from_json(stop.facts) if stop and stop.facts else None
        answer = wait_healthy(
            host, timeout=self.options.timeout, expect_db=expect_db, expect_version=expect.version,
            not_before=stop_facts.stopped_at if stop_facts else None,
            old_pid=stop_intent.main_pid if stop_intent else None)
        before = preflight_facts(ctx)
        after = None
        if expect.counts and before is not None and before.counts:
            after = rest_counts(host)
            if after != before.counts:
                raise StepError(f"counts differ: before {counts_text(before.counts)}; now "
                                f"{counts_text(after)}",
                                hint="the upgraded index does not hold the same data: rolled back")
        return replace(facts, health=answer, counts=after,
                       summary=f"PID {answer.pid} answers: Orthanc {answer.version}, "
                               f"DatabaseVersion {answer.database_version}"
                               + (f", {counts_text(after)}" if after is not None else ""))
