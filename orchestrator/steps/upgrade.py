"""run `BINARY --upgrade CONFIG` as the service user, under a watchdog.

Before: refuse when the index the upgrade would open is missing (Orthanc
would create a fresh empty database there and report success), and refuse a
plan with no rollback point (a snapshot or a relocation) before it. During:
the log lines are shown live; the run is ended when it passes `timeout` or
stalls for `stall` seconds (no log line, ~0 CPU, no I/O: the 1.9.2-1.12.7
deadlock). After: the outcome is classified from the exit code and log text
(orthanc/upgrade_log.py), then the index is read again: its schema must be
the one the binary expects and its counts those preflight saw.

The child's PID is journaled as soon as it exists, so a rollback after a
crash of the tool can end a leftover `--upgrade` by PID (and start time).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import InputError, StepError
from orchestrator.host.host import Host
from orchestrator.host.processes import run_as
from orchestrator.journal import StepRecord
from orchestrator.orthanc.binary import binary_version, expected_schema
from orchestrator.orthanc.index import read_index
from orchestrator.orthanc.upgrade_log import classify, message_of
from orchestrator.steps import migration
from orchestrator.steps.base import (RunContext, StepBase, StepFacts, StepIntent, StepOptions,
                                     counts_text, done_after, latest)
from orchestrator.steps.kind import StepKind
from orchestrator.steps.preflight import preflight_facts
from orchestrator.steps.record import Json
from orchestrator.steps.relocate import RelocateIntent

ROLLBACK_POINTS = (StepKind.SNAPSHOT, StepKind.RELOCATE)


@dataclass(frozen=True, kw_only=True)
class UpgradeOptions(StepOptions):
    timeout: float = 7200.0
    stall: float = 600.0
    log_file: Path | None = None


@dataclass(frozen=True, kw_only=True)
class UpgradeIntent(StepIntent):
    argv: tuple[str, ...]
    index_dir: Path
    log: Path
    extra_logs: tuple[Path, ...] = ()
    user: str | None = None
    cwd: str | None = None
    migrate: bool = False  # PostgreSQL/MySQL: a watched plain start (migration.py), no --upgrade


@dataclass(frozen=True, kw_only=True)
class UpgradeFacts(StepFacts):
    watch: dict[str, Json] | None = None
    verdict: dict[str, Json] | None = None
    schema_after: int | None = None
    counts_after: dict[str, int] | None = None
    revision_after: int | None = None  # the index plugin's revision (PostgreSQL/MySQL)


@dataclass(frozen=True, kw_only=True)
class UpgradeProgress(UpgradeFacts):
    """Journaled while it runs: the child's PID as soon as it exists, then its verdict."""

    pid: int | None = None
    create_time: float | None = None


class Upgrade(StepBase[UpgradeOptions, UpgradeIntent, UpgradeFacts]):
    kind = StepKind.UPGRADE
    Options = UpgradeOptions
    Intent = UpgradeIntent
    Facts = UpgradeFacts

    def describe(self) -> str:
        return (f"run Orthanc --upgrade (a database index: one watched start, for the plugin's "
                f"migration) under a watchdog (limit {self.options.timeout:g}s, "
                f"stall {self.options.stall:g}s)")

    def check(self, host: Host, ctx: RunContext) -> list[str]:
        svc = ctx.plan.service
        if not host.files.exists(Path(svc.binary)):
            raise InputError(f"the binary {svc.binary} does not exist",
                             hint="fix service.binary in the plan")
        run_as(svc.user)  # an unknown user, or no root to switch to it, refuses now
        if ctx.config().index_backend in ("sqlite", "postgresql", "mysql"):
            before = [s.kind for s in ctx.plan.steps[:self.index]]
            if not any(k in ROLLBACK_POINTS for k in before):
                raise InputError("no snapshot or relocate before it: a failed upgrade "
                                 "could not be rolled back",
                                 hint="add `- snapshot` (or a relocate step) before `- upgrade`")
        return []

    def intend(self, host: Host, ctx: RunContext) -> UpgradeIntent:
        svc = ctx.plan.service
        index_dir = upgrade_index_dir(ctx)
        if ctx.config().index_backend == "sqlite" and not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}: --upgrade would create "
                            "a fresh empty database there and report success",
                            hint="check IndexDirectory (or the relocation's source)")
        migrate = ctx.config().index_backend in ("postgresql", "mysql")
        argv = [str(svc.binary)] + ([] if migrate else ["--upgrade"])
        extra: tuple[Path, ...] = ()
        if self.options.log_file is not None:
            argv.append(f"--logfile={self.options.log_file}")
            extra = (self.options.log_file,)
        argv.append(str(svc.config))
        return UpgradeIntent(argv=tuple(argv), index_dir=index_dir,
                             log=Path(ctx.run_dir) / "upgrade.log", extra_logs=extra,
                             user=svc.user, cwd=svc.install_dir, migrate=migrate)

    def apply(self, host: Host, ctx: RunContext, intent: UpgradeIntent) -> UpgradeFacts:
        who = f" as {intent.user}" if intent.user else ""
        if intent.migrate:
            return self._migrate(host, ctx, intent, who)
        watched = host.processes.run_watched(
            intent.argv, text=f"run {shlex.join(intent.argv)}{who}",
            log_path=intent.log, extra_logs=intent.extra_logs,
            timeout=self.options.timeout, stall=self.options.stall, user=intent.user,
            cwd=intent.cwd,
            on_spawn=lambda pid, started: ctx.persist(
                self.id, {"pid": pid, "create_time": started}),
            on_line=lambda line: ctx.progress(self.id, message_of(line)))
        verdict = classify(watched.ended.value, watched.returncode, watched.lines,
                           quiet=watched.quiet, elapsed=watched.elapsed)
        facts = UpgradeFacts(watch=watched.to_dict(), verdict=verdict.to_dict(),
                             summary=verdict.message)
        ctx.persist(self.id, facts.to_json())
        if not verdict.ok:
            raise StepError(f"{verdict.message} (log: {intent.log})", hint=verdict.hint)
        return facts

    def _migrate(self, host: Host, ctx: RunContext, intent: UpgradeIntent,
                 who: str) -> UpgradeFacts:
        idle = migration.nothing_to_migrate(host, ctx)
        if idle is not None:
            return UpgradeFacts(summary=idle)
        conn = migration.index_connection(ctx)
        watched = host.processes.run_watched(
            intent.argv, text=f"start {shlex.join(intent.argv)}{who} once, until its REST API "
                              "answers (the plugin migrates the database), then stop it",
            log_path=intent.log, extra_logs=intent.extra_logs,
            timeout=self.options.timeout, stall=self.options.stall, user=intent.user,
            cwd=intent.cwd,
            on_spawn=lambda pid, started: ctx.persist(
                self.id, {"pid": pid, "create_time": started}),
            on_line=lambda line: ctx.progress(self.id, message_of(line)),
            ready=migration.answers(host),
            active=migration.busy(host, conn) if conn is not None else None)
        ok, message = migration.verdict(watched)
        facts = UpgradeFacts(watch=watched.to_dict(), summary=message)
        ctx.persist(self.id, facts.to_json())
        if not ok:
            raise StepError(f"{message} (log: {intent.log})",
                            hint="see the log; the rollback puts the old database back")
        return facts

    def verify(self, host: Host, ctx: RunContext, intent: UpgradeIntent,
               facts: UpgradeFacts) -> UpgradeFacts:
        if intent.migrate and facts.watch is None:
            return facts  # nothing was started: the revision was read just before
        if intent.migrate:
            known = preflight_facts(ctx)
            revision, counts, problem = migration.revision_check(
                host, ctx, known.counts if known else None, known.revision if known else None)
            if problem:
                raise StepError(problem, hint=f"see {intent.log}")
            return replace(facts, revision_after=revision, counts_after=counts,
                           summary=f"{facts.summary}; revision {revision}, counts unchanged")
        if ctx.config().index_backend != "sqlite":
            return facts
        index = read_index(intent.index_dir)
        expected = expected_db(host, ctx)
        if not index.exists or not index.readable:
            raise StepError(f"cannot read the index after --upgrade: "
                            f"{index.error or 'missing'}", hint=f"see {intent.log}")
        if index.schema_version != expected:
            raise StepError(f"the index is at schema {index.schema_version} after "
                            f"--upgrade, expected {expected}", hint=f"see {intent.log}")
        known = preflight_facts(ctx)
        before = known.counts if known else None
        if before and any(index.counts.get(k, 0) < n for k, n in before.items()):  # may grow (live)
            raise StepError(f"the index holds {counts_text(index.counts)} after --upgrade, "
                            f"{counts_text(before)} before",
                            hint="is this the right index folder? (a wrong IndexDirectory gets a "
                                 "fresh empty database)")
        summary = facts.summary or "upgraded"
        if f"schema {index.schema_version}" not in summary:
            summary += f"; index at schema {index.schema_version}"
        return replace(facts, schema_after=index.schema_version, counts_after=dict(index.counts),
                       summary=f"{summary}, nothing gone" if before else summary)

    def progress_of(self, record: StepRecord) -> UpgradeProgress:
        return UpgradeProgress.from_json(record.progress, where=f"journal: step {record.id}: progress")

    def undo(self, host: Host, ctx: RunContext, record: StepRecord) -> str:
        progress = self.progress_of(record)
        pid, started = progress.pid, progress.create_time
        if pid is not None and host.processes.alive(pid, started):
            host.processes.end(pid, started, f"stop the leftover --upgrade process (PID {pid})")
            return f"stopped the leftover --upgrade process (PID {pid})"
        return "nothing here (the snapshot or relocation undo puts the index back)"

    def holds(self, host: Host, ctx: RunContext, record: StepRecord) -> str | None:
        intent = self.intent_of(record)
        if ctx.config().index_backend != "sqlite" or intent is None:
            return None
        index = read_index(intent.index_dir)
        if index.locked and done_after(ctx, record, StepKind.START_SERVICE):
            return None  # the restarted service holds it; health-check proves its version
        if index.schema_version != expected_db(host, ctx):
            return f"the index is at schema {index.schema_version}"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        pid = self.progress_of(record).pid
        return (f"make sure no `{ctx.plan.service.binary} --upgrade` process is left"
                + (f" (PID {pid}: kill {pid})" if pid else ""))


def upgrade_index_dir(ctx: RunContext) -> Path:
    """Where the index the upgrade works on lives: the relocation's target, else the config's."""
    rec = latest(ctx, StepKind.RELOCATE)
    if rec is not None and rec.intent:
        return RelocateIntent.from_json(rec.intent, where=f"journal: step {rec.id}: intent").to
    return Path(ctx.config().index_dir)


def expected_db(host: Host, ctx: RunContext) -> int:
    """The schema the plan's binary expects (from preflight, else from `--version`)."""
    known = preflight_facts(ctx)
    if known is not None:
        return known.expected_schema
    return expected_schema(binary_version(ctx.plan.service.binary, host.runner))
