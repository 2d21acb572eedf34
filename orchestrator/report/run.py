"""Render a run (plan, run, rollback, resume) and a journal's last run (status), for humans.

`--json` prints `RunReport.to_dict()` / `RunHistory.to_dict()` instead; both
carry the same facts and timings as the text.
"""

from __future__ import annotations

import time
from typing import Any

from orchestrator.report import table

TITLES = {"plan": "dry run (nothing was changed)", "run": "run", "rollback": "rollback",
          "resume": "resume"}
OUTCOMES = {
    "done": "done",
    "planned": "dry run complete: nothing blocking",
    "refused": "refused: nothing was changed",
    "rolled-back": "failed, and rolled back: the service runs on its old state",
    "rollback-incomplete": "failed, and the rollback is INCOMPLETE: act now (below)",
}


def _secs(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}s"


def render_report(report: Any) -> str:
    """The step table, the changes, the downtime and the verdict of an engine call."""
    r = report
    lines = [f"orchestrator {r.mode}: {TITLES.get(r.mode, r.mode)} — service {r.service}, "
             f"plan {r.plan}, run {r.run_id}", ""]
    rows = [(str(i), s.id, s.status.value, _secs(s.seconds), _one_line(s.error or s.detail))
            for i, s in enumerate(r.steps, 1)]
    lines.append(table(rows, ("#", "step", "status", "time", "detail")))
    undone = [s for s in r.steps if s.undo]
    if undone:
        lines += ["", "rollback:"]
        lines += [f"  {s.id}: {s.undo}" for s in reversed(undone)]
    if r.changes:
        verb = "would" if r.mode == "plan" else "changed"
        lines += ["", f"changes ({verb}):"]
        lines += [f"  - {c}" for c in r.changes]
    if r.warnings:
        lines += ["", "warnings:"] + [f"  ! {w}" for w in r.warnings]
    for note in r.notes:
        lines.append(f"note: {note}")
    if r.mode != "plan":
        lines += ["", *render_timeline(r)]
    lines.append("")
    if r.downtime is not None and r.mode != "plan":
        lines.append(f"downtime (stop -> healthy): {r.downtime:.2f}s")
    lines.append(f"total: {r.seconds:.2f}s")
    lines.append(f"result: {OUTCOMES.get(r.outcome.value, r.outcome.value)} (exit {int(r.exit_code)})")
    if r.error and r.outcome.value != "done":
        lines.append(f"error: {r.error}")
        if r.hint:
            lines.append(f"hint: {r.hint}")
    if r.manual:
        lines += ["", "DO THIS NOW, in order:"]
        lines += [f"  {i}. {m}" for i, m in enumerate(r.manual, 1)]
    return "\n".join(lines)


def render_timeline(report: Any, width: int = 48) -> list[str]:
    """Draw each step as a bar on one time axis, and the downtime window under them."""
    timed = [s for s in report.steps if s.start is not None and s.seconds is not None]
    total = max([report.seconds or 0.0] + [s.start + s.seconds for s in timed])
    if not timed or total <= 0:
        return []
    scale = width / total
    label = max(len(s.id) for s in timed)
    lines = [f"timeline (0 to {total:.2f}s, one column = {total / width:.2f}s):"]
    for s in timed:
        begin = min(int(s.start * scale), width - 1)
        length = max(1, round(s.seconds * scale))
        bar = (" " * begin + "█" * length)[:width].ljust(width)
        lines.append(f"  {s.id.ljust(label)}  |{bar}| {_secs(s.seconds)} {s.status.value}")
    stop = next((s for s in timed if s.kind == "stop-service"), None)
    if report.downtime is not None and stop is not None:
        begin = min(int(stop.start * scale), width - 1)
        length = max(1, round(report.downtime * scale))
        bar = (" " * begin + "▒" * length)[:width].ljust(width)
        lines.append(f"  {'downtime'.ljust(label)}  |{bar}| {_secs(report.downtime)} service unavailable")
    return lines


def render_history(run: Any, *, lock_owner: Any = None, plan_hint: str | None = None) -> str:
    """Explain a journal's last run: what finished, what was in flight, what to do next."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started))
    lines = [f"service {run.service}: last run {run.run_id} ({run.mode}), started {when} by pid "
             f"{run.pid} on {run.host}", f"plan: {run.plan}", ""]
    rows = []
    for i, s in enumerate(run.steps.values(), 1):
        dur = _secs(s.finished - s.started) if s.finished and s.started else ""
        detail = s.undo_error or s.error or str(s.facts.get("summary", "")) if s.facts or s.error \
            or s.undo_error else ""
        rows.append((str(i), s.id, s.state.value, dur, _one_line(detail)))
    lines.append(table(rows, ("#", "step", "state", "time", "detail")))
    lines.append("")
    plan = plan_hint or run.plan
    if lock_owner is not None:
        lines.append(f"a run is in progress right now: {lock_owner.describe()}")
    elif run.outcome is None:
        flight = [s for s in run.steps.values() if s.state.value in ("started", "undoing")]
        where = f" during {flight[-1].id}" if flight else " between two steps"
        lines.append(f"INTERRUPTED: the run stopped{where} (pid {run.pid} is gone) and its "
                     "journal is open.")
        lines.append(f"  to go back to the old state:  orchestrator rollback {plan}")
        lines.append(f"  to finish it forwards:        orchestrator resume {plan}")
    elif run.open:
        lines.append(f"ROLLBACK INCOMPLETE (exit {run.exit_code}): {run.message}")
        lines.append(f"  fix what the run reported, then: orchestrator rollback {plan}")
    else:
        lines.append(f"finished: {OUTCOMES.get(run.outcome.value, run.outcome.value)} "
                     f"(exit {run.exit_code})" + (f": {run.message}" if run.message else ""))
    if run.torn_tail:
        lines.append("note: the journal's last line was torn by a crash; it is ignored")
    return "\n".join(lines)


def render_status(status: Any) -> str:
    """Explain `runs.status(...)`: the last run, or where no run was found."""
    if status.history is None:
        text = f"no run recorded in {status.where}"
        if status.plan is None:
            text += "\n(given a plan, `orchestrator status PLAN` reads the plan's own state_dir)"
        return text
    return render_history(status.history, lock_owner=status.lock_owner,
                          plan_hint=str(status.plan) if status.plan else None)


def _one_line(text: Any, width: int = 110) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[:width - 1] + "…"
