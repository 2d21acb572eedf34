"""Render the `inspect` survey (`Survey.to_dict()`, gathered by `orchestrator.orthanc.survey`).

The text is rendered from the very dict that `--json` prints, so both always
carry the same facts. Nothing here reads the machine.
"""

from __future__ import annotations

from orchestrator.report import table

SECTIONS = (("Configuration", "config"), ("Index", "index"),
            ("Running server (REST)", "server"), ("Binary", "binary"), ("Service", "service"),
            ("Database index (PostgreSQL / MySQL)", "database"))


def render_survey(data: dict) -> str:
    """Render a survey for a terminal: hazards first, then notes, then each section."""
    out = ["Hazards"]
    if not data["hazards"]:
        out.append("  (none)")
    for h in data["hazards"]:
        out.append(f"  {h['severity'].upper():8} {h['code']}: {_show(h['message'])}")
        out.append(f"  {'':8} hint: {_show(h['hint'])}")
    if data.get("notes"):
        out += ["", "Notes"] + [f"  {_show(n)}" for n in data["notes"]]
    for title, key in SECTIONS:
        section = data.get(key)
        if section is None:
            continue
        out += ["", title]
        rows: list[tuple[str, str]] = []
        for name, value in section.items():
            lines = _lines(value)
            rows.append((name.replace("_", " "), lines[0]))
            rows += [("", more) for more in lines[1:]]
        out += ["  " + line for line in table(rows).splitlines()]
    return "\n".join(out)


def _lines(value: object) -> list[str]:
    if isinstance(value, list):
        return [_show(str(v)) for v in value] or ["-"]
    if isinstance(value, dict):
        if all(isinstance(v, int) for v in value.values()):  # counts: one line
            return [", ".join(f"{k} {_scalar(v)}" for k, v in value.items()) or "-"]
        return [f"{k}: {_scalar(v)}" for k, v in value.items()] or ["-"]
    return [_scalar(value)]


def _scalar(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _show(str(value))


def _show(text: str) -> str:
    """Escape control and non-UTF-8 characters so one fact stays on one printable line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
