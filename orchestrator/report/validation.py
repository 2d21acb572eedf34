"""Render `validate`'s result (the document `orchestrator.plan.summary.summarize` builds)."""

from __future__ import annotations

from typing import Any

from orchestrator.report import table


def render_validation(result: dict[str, Any]) -> str:
    """The human form of `validate`'s document (`orchestrator.plan.summary.summarize`)."""
    svc = result["service"]
    lines = [f"{result['plan']}: OK (plan version {result['version']}, "
             f"{len(result['steps'])} steps)",
             f"service  {svc['name']} via {svc['manager']}, binary {svc['binary']}",
             f"config   {svc['config']}" + _config_line(result["config"]),
             f"url      {svc['url'] or '(from the config HttpPort)'}"
             + (f"  [{svc['url_from']}]" if svc["url_from"] else "")]
    if svc["credentials"]:
        c = svc["credentials"]
        lines.append(f"auth     user {c['username'] or '(from the URL/netrc)'}, "
                     f"password from {c['password_from']}")
    rows = [(f"{s['index'] + 1}.", s["kind"], _options(s["options"])) for s in result["steps"]]
    lines.append("steps")
    lines.extend("  " + row for row in table(rows).splitlines())
    lines.extend(f"note: {n}" for n in result["notes"])
    lines.extend(f"warning: {w}" for w in result["warnings"])
    return "\n".join(lines)


def _config_line(facts: dict[str, Any] | None) -> str:
    if facts is None:
        return "  (not checked)"
    labels = {"http_port": "HttpPort", "storage_dir": "storage", "index_dir": "index",
              "index_backend": "index backend"}
    parts = [f"{label} {facts[key]}" for key, label in labels.items() if key in facts]
    return ": " + ", ".join(parts) if parts else ": loaded"


def _options(options: dict[str, Any]) -> str:
    parts = []
    for key, value in options.items():
        if isinstance(value, list):
            value = " ".join(map(str, value)) if key in ("argv", "undo") else ",".join(map(str, value))
            value = f"[{value}]"
        elif isinstance(value, dict):
            value = "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
        parts.append(f"{key}={value}")
    return "  ".join(parts)
