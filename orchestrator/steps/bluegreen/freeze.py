"""freeze: stop new writes on the old server, then copy the last of them (the final catch-up).

Two ways (docs/blue-green.md gives their cost):
- `stop`: stop the old service; the rest is then read from its storage folder
  and index (`import-storage` from the first attachment row the change log lists
  after the copy's cursor), which needs no REST and is fast;
- `command`: run the admin's argv (a load balancer refusing writes); the old
  server keeps serving reads, and the rest is copied over REST.

The write freeze begins here (its wall-clock start is journaled as progress the
moment it takes effect) and ends when the switch is done. Undo lifts it: start
the old service again, or run the admin's undo argv. A freeze whose apply was
cut short is lifted the same way (both are safe to repeat).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import Enum

from orchestrator.errors import RefusedError
from orchestrator.host.host import Host
from orchestrator.journal import StepRecord
from orchestrator.orthanc.index import index_path
from orchestrator.replication.follow import Pass, follow, follow_storage
from orchestrator.run_report import Downtime
from orchestrator.steps.base import RunContext, StepBase, StepFacts, StepIntent, StepOptions
from orchestrator.steps.bluegreen import pair as pairs
from orchestrator.steps.bluegreen import read_only
from orchestrator.steps.kind import StepKind

FINAL_PASSES = 3  # a write accepted just before the freeze may land during the first pass


class FreezeWay(str, Enum):
    STOP = "stop"
    COMMAND = "command"
    CONFIG = "config"  # restart read-only (read_only.py)


@dataclass(frozen=True, kw_only=True)
class FreezeOptions(StepOptions):
    how: FreezeWay = FreezeWay.STOP
    argv: tuple[str, ...] | None = None
    undo: tuple[str, ...] | None = None
    timeout: float = 120.0


@dataclass(frozen=True, kw_only=True)
class FreezeFacts(StepFacts):
    frozen_at: float = 0.0  # seconds since the epoch: the freeze took effect
    action_s: float = 0.0  # the stop (or the hook) took this long before it
    copied: int = 0
    failed: int = 0
    by: str = ""  # "rest" or "storage"
    seconds: float = 0.0


class Freeze(StepBase[FreezeOptions, StepIntent, FreezeFacts]):
    kind = StepKind.FREEZE
    Options = FreezeOptions
    Facts = FreezeFacts
    downtime = Downtime.BEGINS  # of writes: the report's downtime is the write freeze

    def describe(self) -> str:
        if self.options.how is FreezeWay.COMMAND and self.options.argv:
            return f"freeze writes with `{shlex.join(self.options.argv)}`, copy the rest"
        if self.options.how is FreezeWay.CONFIG:
            return "restart the old server read-only (a Lua filter), copy the rest"
        return "stop the old server, copy the rest from its storage folder"

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        if self.options.how is FreezeWay.COMMAND and not self.options.argv:
            raise RefusedError("freeze: {how: command} needs an argv",
                               hint="give freeze: {how: command, argv: [...], undo: [...]}")
        if self.options.how is FreezeWay.CONFIG:
            read_only.check(ctx.config(), host)
        pairs.copy_step(ctx)
        return []

    def apply(self, host: Host, ctx: RunContext, intent: StepIntent) -> FreezeFacts:
        p = pairs.pair(ctx)
        began = pairs.wall()
        if self.options.how is FreezeWay.STOP:
            host.service.stop(timeout=self.options.timeout)
        elif self.options.how is FreezeWay.CONFIG:
            edit = read_only.freeze(ctx.config(), host, pairs.state_dir(ctx))
            ctx.persist(self.id, {"config_edit": edit.to_json()})
            stopped = self._restart(host, ctx, p.source)
        else:
            host.commands.run(self.options.argv or (), timeout=self.options.timeout)
        # Writes are refused from here on. Orthanc 1.10 keeps storing while it shuts down as
        # long as clients keep it busy (its stop can last tens of seconds): those instances
        # are in its index and storage, and the final catch-up copies them.
        frozen_at = pairs.wall()
        if self.options.how is FreezeWay.CONFIG:
            frozen_at = stopped  # no writes from the old process's exit on: none while it starts
        ctx.persist(self.id, {"frozen_at": frozen_at, "action_s": round(frozen_at - began, 3)})
        if pairs.answers(p.source):  # command, or a dry run's stop: over REST
            by, done = "rest", self._passes(p, host)
        else:
            config = ctx.config()
            index = index_path(config.index_dir)
            by, done = "storage", follow_storage(config.storage_dir, index, p, host.changes)
        if done.aborted or done.failed:
            raise RefusedError(f"the final catch-up did not finish: {done.failed} failed"
                               + (f", {done.aborted}" if done.aborted else ""),
                               hint="see the new server's log; the rollback lifts the freeze")
        action = round(frozen_at - began, 3)
        what = {FreezeWay.STOP: "stopping the old server", FreezeWay.COMMAND: "the hook",
                FreezeWay.CONFIG: "the read-only restart"}[self.options.how]
        return FreezeFacts(frozen_at=frozen_at, action_s=action, copied=done.copied,
                           failed=done.failed, by=by, seconds=round(pairs.wall() - frozen_at, 3),
                           summary=f"writes frozen ({what} took {action:.2f} s); final catch-up "
                           f"({by}): {done.text()}")

    def _restart(self, host: Host, ctx: RunContext, source) -> float:
        """Restart the old service (it reads its configuration again) and wait for its REST;
        return when (wall clock) its old process was gone."""
        ctx.forget_config()
        if host.service.status().running:
            host.service.stop(timeout=self.options.timeout)
        stopped = pairs.wall()
        host.service.start(timeout=self.options.timeout)
        pairs.wait_answers(source, host.clock, self.options.timeout)
        return stopped

    def _passes(self, p, host: Host) -> Pass:
        for _ in range(FINAL_PASSES):
            done = follow(p, host.changes)
            if not done.copied or not done.ok:
                break
        return done

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        if self.options.how is FreezeWay.STOP:
            if host.service.status().running:
                return "the old server runs"
            host.service.start(timeout=self.options.timeout)
            return "started the old server again"
        if self.options.how is FreezeWay.CONFIG:
            edit = (record.progress or {}).get("config_edit")
            if edit:
                read_only.thaw(read_only.Edit.from_json(edit), host)
            self._restart(host, ctx, pairs.pair(ctx).source)
            return "put the old server's configuration back and restarted it"
        if not self.options.undo:
            return "no undo command given: lift the write freeze by hand"
        done = host.commands.run(self.options.undo, timeout=self.options.timeout)
        return f"lifted the write freeze: {shlex.join(self.options.undo)} exit {done.returncode}"

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        if self.options.how is FreezeWay.STOP:
            return f"start the old service {ctx.plan.service.name} again"
        if self.options.how is FreezeWay.CONFIG:
            edit = (record.progress or {}).get("config_edit") or {}
            return (f"put back {edit.get('file', 'the configuration')} from "
                    f"{edit.get('backup') or '(remove the file: it is ours)'}, then restart "
                    f"{ctx.plan.service.name}")
        undo = shlex.join(self.options.undo) if self.options.undo else "(none given)"
        return f"lift the write freeze on the old server by hand (the plan's undo: {undo})"
