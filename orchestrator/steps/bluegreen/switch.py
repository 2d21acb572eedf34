"""switch: send the clients to the new server, which ends the write freeze; undo sends them back.

Ways: `command` (the admin's argv: DNS, a load balancer, a port swap script)
or `report` (the step only says where clients must go; the freeze lasts until
the admin has switched them). The new server's last change is journaled
before the switch, so that undo can carry back what arrived on it since:
undo runs the admin's undo argv (which should point clients back to the old
server with writes still frozen; the freeze's undo lifts it afterwards), then
follows the new server's /changes from that point into the old server (the
catch-up, the other way round), starting the old service first if the freeze
stopped it.

The write-freeze length (from the freeze taking effect to the switch being
done, wall clock) is in the facts and the summary.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import Enum

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.replication.follow import follow, last_seq, prime
from orchestrator.run_report import Downtime
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions, latest
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.kind import StepKind


class SwitchWay(str, Enum):
    COMMAND = "command"
    REPORT = "report"


@dataclass(frozen=True, kw_only=True)
class SwitchOptions(StepOptions):
    how: SwitchWay = SwitchWay.REPORT
    argv: tuple[str, ...] | None = None
    undo: tuple[str, ...] | None = None
    carry_back: bool = True
    timeout: float = 120.0


@dataclass(frozen=True, kw_only=True)
class SwitchIntent(StepIntent):
    target_seq: int  # the new server's last change before the switch


@dataclass(frozen=True, kw_only=True)
class SwitchFacts(StepFacts):
    switched_at: float = 0.0  # seconds since the epoch
    write_freeze_s: float | None = None


class Switch(StepBase[SwitchOptions, SwitchIntent, SwitchFacts]):
    kind = StepKind.SWITCH
    Options = SwitchOptions
    Intent = SwitchIntent
    Facts = SwitchFacts
    downtime = Downtime.ENDS  # of the write freeze

    def describe(self) -> str:
        if self.options.how is SwitchWay.COMMAND and self.options.argv:
            return f"switch clients to the new server: {shlex.join(self.options.argv)}"
        return "report where clients must go now (the new server)"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        if self.options.how is SwitchWay.COMMAND and not self.options.argv:
            raise RefusedError("switch: {how: command} needs an argv",
                               hint="give switch: {how: command, argv: [...], undo: [...]}")
        pairs.copy_step(ctx)
        return []

    def intend(self, host: Host, ctx: RunContext) -> SwitchIntent:
        p = pairs.pair(ctx)
        return SwitchIntent(target_seq=last_seq(p.target, p.policy))

    def apply(self, host: Host, ctx: RunContext, intent: SwitchIntent) -> SwitchFacts:
        p = pairs.pair(ctx)
        if self.options.how is SwitchWay.COMMAND:
            host.commands.run(self.options.argv or (), timeout=self.options.timeout)
            said = "clients switched"
        else:
            said = f"point clients at {p.target.base_url} now (the freeze lasts until then)"
        switched_at = pairs.wall()
        frozen_at = _frozen_at(ctx)
        length = round(switched_at - frozen_at, 3) if frozen_at else None
        freeze = f"; write freeze {length:.2f} s" if length is not None else ""
        return SwitchFacts(switched_at=switched_at, write_freeze_s=length,
                           summary=f"{said}{freeze}",
                           notes=(f"write freeze: {length:.2f} s",) if length is not None else ())

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None:
            return "the switch had not begun"
        said = []
        if self.options.how is SwitchWay.COMMAND and self.options.undo:
            done = host.commands.run(self.options.undo, timeout=self.options.timeout)
            said.append(f"switched back ({shlex.join(self.options.undo)}: exit {done.returncode})")
        elif self.options.how is SwitchWay.COMMAND:
            said.append("no undo command given: point clients back at the old server by hand")
        if self.options.carry_back:
            said.append(self._carry_back(host, ctx, intent))
        return "; ".join(said) or "nothing to undo"

    def _carry_back(self, host: Host, ctx: RunContext, intent: SwitchIntent) -> str:
        back = pairs.pair(ctx).reversed()
        if not pairs.answers(back.target):
            freeze = latest(ctx, StepKind.FREEZE)
            if freeze is None:
                raise RefusedError(f"the old server {back.target.base_url} does not answer",
                                   hint="start it, then `orchestrator rollback` again")
            host.service.start(timeout=self.options.timeout)  # the freeze stopped it
        prime(back, intent.target_seq, host.changes)
        done = follow(back, host.changes)
        if not done.ok:
            raise RefusedError(f"carrying back what arrived on the new server failed: "
                               f"{done.failed} failed{', ' + done.aborted if done.aborted else ''}",
                               hint="`orchestrator rollback` retries it")
        return (f"carried back to the old server what arrived on the new one since the switch: "
                f"{done.text()}")

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        p = pairs.pair(ctx)
        return (f"point clients back at {p.source.base_url}, then copy what arrived on "
                f"{p.target.base_url} since the switch: orchestrator replicate "
                f"{p.target.base_url} {p.source.base_url}")


def _frozen_at(ctx: RunContext) -> float | None:
    record = latest(ctx, StepKind.FREEZE)
    if record is None:
        return None
    value = (record.facts or {}).get("frozen_at") or (record.progress or {}).get("frozen_at")
    return float(value) if isinstance(value, (int, float)) else None
