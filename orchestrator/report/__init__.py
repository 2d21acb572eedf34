"""Human and JSON rendering of results. One module per command family."""

from __future__ import annotations

import json
from typing import Any


def to_json(data: Any) -> str:
    """Serialise a result for --json: one document, stable key order, paths as strings."""
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def table(rows: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> str:
    """Format rows as left-aligned columns separated by two spaces."""
    all_rows = ([header] if header else []) + rows
    if not all_rows:
        return ""
    widths = [max(len(str(r[i])) for r in all_rows) for i in range(len(all_rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in all_rows]
    if header:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
