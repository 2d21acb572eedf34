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
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, StepError
from orchestrator.journal import StepRecord
from orchestrator.steps.base import (RunContext, StepBase, counts_text, done_after,
                                     preflight_facts, service_config, upgrade_index_dir)

ROLLBACK_POINTS = ("snapshot", "relocate")


class Upgrade(StepBase):
    kind = "upgrade"

    def describe(self) -> str:
        return (f"run Orthanc --upgrade under a watchdog (limit {self.options.get('timeout', 7200):g}s, "
                f"stall {self.options.get('stall', 600):g}s)")

    def check(self, host: Any, ctx: RunContext) -> list[str]:
        from orchestrator.host.processes import run_as

        svc = ctx.plan.service
        if not host.files.exists(Path(svc.binary)):
            raise InputError(f"the binary {svc.binary} does not exist",
                             hint="fix service.binary in the plan")
        run_as(svc.user)  # an unknown user, or no root to switch to it, refuses now
        if service_config(ctx).index_backend == "sqlite":
            before = [s.kind for s in ctx.plan.steps[:self.index]]
            if not any(k in ROLLBACK_POINTS for k in before):
                raise InputError("no snapshot or relocate before it: a failed upgrade "
                                 "could not be rolled back",
                                 hint="add `- snapshot` (or a relocate step) before `- upgrade`")
        return []

    def intend(self, host: Any, ctx: RunContext) -> dict:
        svc = ctx.plan.service
        config = service_config(ctx)
        index_dir = upgrade_index_dir(ctx)
        if config.index_backend == "sqlite" and not host.files.exists(index_dir / "index"):
            raise StepError(f"no index at {index_dir / 'index'}: --upgrade would create "
                            "a fresh empty database there and report success",
                            hint="check IndexDirectory (or the relocation's source)")
        log = Path(ctx.run_dir) / "upgrade.log"
        argv = [str(svc.binary), "--upgrade"]
        extra = []
        if self.options.get("log_file"):
            argv.append(f"--logfile={self.options['log_file']}")
            extra.append(str(self.options["log_file"]))
        argv.append(str(svc.config))
        return {"argv": argv, "index_dir": str(index_dir), "log": str(log), "extra_logs": extra,
                "user": svc.user, "cwd": svc.install_dir}

    def apply(self, host: Any, ctx: RunContext, intent: dict) -> dict:
        from orchestrator.orthanc.upgrade_log import classify, message_of

        who = f" as {intent['user']}" if intent.get("user") else ""
        watched = host.processes.run_watched(
            intent["argv"], text=f"run {shlex.join(intent['argv'])}{who}",
            log_path=Path(intent["log"]), extra_logs=intent["extra_logs"],
            timeout=float(self.options.get("timeout", 7200)),
            stall=float(self.options.get("stall", 600)), user=intent.get("user"),
            cwd=intent.get("cwd"),
            on_spawn=lambda pid, started: ctx.persist(self.id, {"pid": pid, "create_time": started}),
            on_line=lambda line: ctx.progress(self.id, message_of(line)))
        verdict = classify(watched.ended.value, watched.returncode, watched.lines,
                           quiet=watched.quiet, elapsed=watched.elapsed)
        facts = {"watch": watched.to_dict(), "verdict": verdict.to_dict(),
                 "summary": verdict.message}
        ctx.persist(self.id, facts)
        if not verdict.ok:
            raise StepError(f"{verdict.message} (log: {intent['log']})", hint=verdict.hint)
        return facts

    def verify(self, host: Any, ctx: RunContext, intent: dict, facts: dict) -> dict:
        from orchestrator.orthanc.index import read_index

        if service_config(ctx).index_backend != "sqlite":
            return {}
        index = read_index(Path(intent["index_dir"]))
        expected = expected_db(host, ctx)
        if not index.exists or not index.readable:
            raise StepError(f"cannot read the index after --upgrade: "
                            f"{index.error or 'missing'}", hint=f"see {intent['log']}")
        if index.schema_version != expected:
            raise StepError(f"the index is at schema {index.schema_version} after "
                            f"--upgrade, expected {expected}", hint=f"see {intent['log']}")
        before = preflight_facts(ctx).get("counts")
        if before and index.counts != before:
            raise StepError(f"the index holds {counts_text(index.counts)} after --upgrade, "
                            f"{counts_text(before)} before",
                            hint="is this the right index folder? (a wrong IndexDirectory gets a "
                                 "fresh empty database)")
        summary = str(facts.get("summary", "upgraded"))
        if f"schema {index.schema_version}" not in summary:
            summary += f"; index at schema {index.schema_version}"
        return {"schema_after": index.schema_version, "counts_after": index.counts,
                "summary": f"{summary}, counts unchanged" if before else summary}

    def undo(self, host: Any, ctx: RunContext, record: StepRecord) -> str:
        pid, started = record.progress.get("pid"), record.progress.get("create_time")
        if host.processes.alive(pid, started):
            host.processes.end(pid, started, f"stop the leftover --upgrade process (PID {pid})")
            return f"stopped the leftover --upgrade process (PID {pid})"
        return "nothing here (the snapshot or relocation undo puts the index back)"

    def holds(self, host: Any, ctx: RunContext, record: StepRecord) -> str | None:
        from orchestrator.orthanc.index import read_index

        if service_config(ctx).index_backend != "sqlite":
            return None
        index = read_index(Path(record.intent["index_dir"]))
        if index.locked and done_after(ctx, record, "start-service"):
            return None  # the restarted service holds it; health-check proves its version
        if index.schema_version != expected_db(host, ctx):
            return f"the index is at schema {index.schema_version}"
        return None

    def manual_undo(self, ctx: RunContext, record: StepRecord) -> str:
        pid = record.progress.get("pid")
        return (f"make sure no `{ctx.plan.service.binary} --upgrade` process is left"
                + (f" (PID {pid}: kill {pid})" if pid else ""))


def expected_db(host: Any, ctx: RunContext) -> int:
    """The schema the plan's binary expects (from preflight, else from `--version`)."""
    known = preflight_facts(ctx).get("expected_schema")
    if known is not None:
        return int(known)
    from orchestrator.orthanc.binary import binary_version, expected_schema

    return expected_schema(binary_version(ctx.plan.service.binary, host.runner))
