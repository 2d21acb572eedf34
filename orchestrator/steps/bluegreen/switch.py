"""switch: send the clients to the new server, which ends the write freeze; undo sends them back.

Ways: `command` (the admin's argv: DNS, a load balancer, a port swap script),
`ports` (both servers on this host: the old one stops, the new one restarts on the
old one's HTTP and DICOM ports, see ports.py; undo gives the ports back) or
`report` (the step only says where clients must go; the freeze lasts until
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
from orchestrator.host.service import ServicePort
from orchestrator.journal import StepRecord
from orchestrator.replication.follow import follow, last_seq, prime
from orchestrator.run_report import Downtime
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions, latest
from orchestrator.orthanc.config import load_config
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.bluegreen.ports import NewService, PortEdit, give_back, plan_edits, \
    ports_to_take, take
from orchestrator.steps.kind import StepKind


class SwitchWay(str, Enum):
    COMMAND = "command"
    PORTS = "ports"
    REPORT = "report"


@dataclass(frozen=True, kw_only=True)
class SwitchOptions(StepOptions):
    how: SwitchWay = SwitchWay.REPORT
    argv: tuple[str, ...] | None = None
    undo: tuple[str, ...] | None = None
    carry_back: bool = True
    timeout: float = 120.0
    new_service: NewService | None = None  # ports: the new server as a service of this host


@dataclass(frozen=True, kw_only=True)
class SwitchIntent(StepIntent):
    target_seq: int  # the new server's last change before the switch
    edits: tuple[PortEdit, ...] = ()  # ports: the new server's configuration files changed
    old_running: bool = False  # ports: the old server ran before the switch (undo starts it)


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
        if self.options.how is SwitchWay.PORTS and self.options.new_service:
            return (f"stop the old server; restart {self.options.new_service.name} on the old "
                    "server's ports")
        return "report where clients must go now (the new server)"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        if self.options.how is SwitchWay.COMMAND and not self.options.argv:
            raise RefusedError("switch: {how: command} needs an argv",
                               hint="give switch: {how: command, argv: [...], undo: [...]}")
        pairs.copy_step(ctx)
        if self.options.how is SwitchWay.PORTS:
            self._ports_check(host, ctx)
        return []

    def _ports_check(self, host: Host, ctx: RunContext) -> None:
        new = self.options.new_service
        if new is None:
            raise RefusedError("switch: {how: ports} needs the new server's service",
                               hint="give switch: {how: ports, new_service: {name: ..., "
                                    "config: ...}}")
        _peer(host)
        config = load_config(new.config)
        target = pairs.pair(ctx).target
        if target.port != config.http_port:
            raise RefusedError(f"switch: {{how: ports}}: the new server {target.base_url} is not "
                               f"the one of {new.config} (HttpPort {config.http_port})",
                               hint="replicate.to and switch.new_service must name one server")
        ports_to_take(ctx.config(), config)  # refuses a DicomPort it cannot take

    def intend(self, host: Host, ctx: RunContext) -> SwitchIntent:
        p = pairs.pair(ctx)
        seq = last_seq(p.target, p.policy)
        if self.options.how is not SwitchWay.PORTS or self.options.new_service is None:
            return SwitchIntent(target_seq=seq)
        new = load_config(self.options.new_service.config)
        edits = plan_edits(new, ports_to_take(ctx.config(), new), pairs.state_dir(ctx) / "ports")
        return SwitchIntent(target_seq=seq, edits=edits, old_running=host.service.status().running)

    def apply(self, host: Host, ctx: RunContext, intent: SwitchIntent) -> SwitchFacts:
        p = pairs.pair(ctx)
        if self.options.how is SwitchWay.COMMAND:
            host.commands.run(self.options.argv or (), timeout=self.options.timeout)
            said = "clients switched"
        elif self.options.how is SwitchWay.PORTS:
            said = self._take_ports(host, ctx, intent)
        else:
            said = f"point clients at {p.target.base_url} now (the freeze lasts until then)"
        switched_at = pairs.wall()
        frozen_at = _frozen_at(ctx)
        length = round(switched_at - frozen_at, 3) if frozen_at else None
        return SwitchFacts(switched_at=switched_at, write_freeze_s=length, summary=said,
                           notes=(f"write freeze: {length:.2f} s",) if length is not None else ())

    def _take_ports(self, host: Host, ctx: RunContext, intent: SwitchIntent) -> str:
        """Stop the old server, give its ports to the new one, restart that, and wait until
        it answers on the old server's address."""
        peer, timeout = _peer(host), self.options.timeout
        if host.service.status().running:
            host.service.stop(timeout=timeout)
        take(host, intent.edits)
        ctx.persist(self.id, {"ports_taken": True})
        if peer.status().running:
            peer.stop(timeout=timeout)
        peer.start(timeout=timeout)
        url = pairs.source(ctx).base_url
        there = pairs.target_at(ctx, url)
        host.changes.apply(f"wait until {peer.name} answers on {url}",
                           pairs.wait_answers, there, host.clock, timeout)
        moved = ", ".join(f"{k} {v}" for e in intent.edits for k, v in e.ports.items())
        return f"{peer.name} now serves on the old server's ports ({moved or 'the same ports'})"

    def _give_ports_back(self, host: Host, ctx: RunContext, intent: SwitchIntent) -> str:
        peer, timeout = _peer(host), self.options.timeout
        if peer.status().running:
            peer.stop(timeout=timeout)
        give_back(host, intent.edits)
        peer.start(timeout=timeout)
        target = pairs.pair(ctx).target
        host.changes.apply(f"wait until {peer.name} answers on {target.base_url}",
                           pairs.wait_answers, target, host.clock, timeout)
        if intent.old_running and not host.service.status().running:
            host.service.start(timeout=timeout)
        return f"{peer.name} is back on its own ports"

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        intent = self.intent_of(record)
        if intent is None:
            return "the switch had not begun"
        said = []
        if self.options.how is SwitchWay.PORTS:
            said.append(self._give_ports_back(host, ctx, intent))
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
        intent = self.intent_of(record)
        if self.options.how is SwitchWay.PORTS and intent is not None and intent.edits:
            files = "; ".join(f"{e.file} from {e.backup}" if e.backup else f"remove {e.file}"
                              for e in intent.edits)
            return (f"stop the new server, put back its configuration ({files}), start it and "
                    f"the old server again, then: orchestrator replicate {p.target.base_url} "
                    f"{p.source.base_url}")
        return (f"point clients back at {p.source.base_url}, then copy what arrived on "
                f"{p.target.base_url} since the switch: orchestrator replicate "
                f"{p.target.base_url} {p.source.base_url}")


def _peer(host: Host) -> ServicePort:
    """The new server's service port, which the composition root wires for a `ports` switch."""
    if host.peer is None:
        raise RuntimeError("switch {how: ports} without host.peer: wiring.peer_manager missed it")
    return host.peer


def _frozen_at(ctx: RunContext) -> float | None:
    record = latest(ctx, StepKind.FREEZE)
    if record is None:
        return None
    value = (record.facts or {}).get("frozen_at") or (record.progress or {}).get("frozen_at")
    return float(value) if isinstance(value, (int, float)) else None
