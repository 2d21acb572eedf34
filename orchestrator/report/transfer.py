"""Rendering of a replicate / import-storage summary: the --json document and its text form.

The summary is read through its attributes only (kind, source, target, dry, count_table(),
...), so this layer does not import the replication package.
"""

from __future__ import annotations

from typing import Any

from orchestrator.report import table

SHOWN = 20  # failures printed one by one in text; --json lists up to MAX_LISTED


def document(summary: Any) -> dict:
    """The --json document of a replication Summary (also what `render_text` reads)."""
    elapsed = summary.elapsed
    failed = summary.count_table()["failed"]
    return {
        "ok": summary.ok,
        "exit_code": int(summary.exit_code),
        "command": summary.kind,
        "source": summary.source,
        "target": summary.target,
        "dry_run": summary.dry,
        "counts": summary.count_table(),
        "skipped": dict(sorted(summary.skipped.items())),
        "failures": list(summary.failures),
        "failures_not_listed": max(0, failed - len(summary.failures)),
        "bytes_copied": summary.bytes_copied,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(summary.processed / elapsed, 1) if elapsed > 0 else None,
        "aborted": summary.aborted,
        "resumed_from": summary.resumed_from,
        "warnings": list(summary.warnings),
        "notes": list(summary.notes),
        "verify": summary.verify,
    }


def render_text(data: dict) -> str:
    """Render the summary dict as lines for a person."""
    lines = [f"{data['command']}: {data['source']} -> {data['target']}"
             + ("  (dry run: nothing changed)" if data["dry_run"] else "")]
    if data.get("resumed_from"):
        lines.append(f"resumed after {data['resumed_from']}")
    counts = data["counts"]
    rows = [(name.replace("_", " "), str(n)) for name, n in counts.items()
            if n or name in ("copied", "failed") and not (data["dry_run"] and name == "copied")]
    lines.append(table(rows))
    for reason, n in data["skipped"].items():
        lines.append(f"  skipped {n}: {reason}")
    rate = data.get("rate_per_s")
    mb = data["bytes_copied"] / 1e6
    lines.append(f"{data['seconds']:.1f} s" + (f", {rate:.0f} instances/s" if rate else "")
                 + (f", {mb:.1f} MB sent" if mb else ""))
    for failure in data["failures"][:SHOWN]:
        lines.append(f"  failed: {failure['item']}: {failure['reason']}")
    hidden = len(data["failures"]) - SHOWN + data["failures_not_listed"]
    if hidden > 0:
        lines.append(f"  ... and {hidden} more failures (--json lists them)")
    verify = data.get("verify")
    if verify:
        lines.append(_verify_line(verify))
        for problem in verify.get("problems", [])[:SHOWN]:
            lines.append(f"  verify: {problem['item']}: {problem['reason']}")
        for note in verify.get("notes", []):
            lines.append(f"  note: {note}")
    for warning in data["warnings"]:
        lines.append(f"warning: {warning}")
    for note in data["notes"]:
        lines.append(f"note: {note}")
    if data["aborted"]:
        lines.append(f"stopped early: {data['aborted']}")
        lines.append("  the resume state is saved: run the same command again to continue")
    if data["ok"]:
        lines.append("ok (dry run)" if data["dry_run"] else "ok")
    else:
        lines.append("NOT complete: see the failures above; a rerun retries them first")
    return "\n".join(line for line in lines if line)


def _verify_line(verify: dict) -> str:
    verdict = "ok" if verify.get("ok") else "FAILED"
    parts = [f"{k} {verify[k]}" for k in ("checked", "equal", "missing", "different", "errors",
                                          "gone", "target_extra") if verify.get(k)]
    return f"verify {verdict}: " + ", ".join(parts)
