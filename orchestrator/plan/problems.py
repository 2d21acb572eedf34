"""What is wrong with a plan: `Problem` (a message at a key path and a line) and `PlanError`.

Also the wording shared by every check: key paths as `steps[2].upgrade.timeout`,
values shown short and on one line, JSON types in plain words.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InputError

KeyPath = tuple[Any, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, at a key path and a line."""

    line: int | None
    path: KeyPath
    message: str
    hint: str | None = None

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        text = f"{where}: {format_path(self.path)}: {self.message}" if self.path \
            else f"{where}: {self.message}"
        return one_line(text)


class PlanError(InputError):
    """A plan that fails its schema or cross-checks: `problems` lists them all, the
    message shows the first."""

    def __init__(self, source: str, problems: list[Problem]):
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first.format(source) + more, first.hint)
        self.source = source
        self.problems = problems


def format_path(path: KeyPath) -> str:
    """Render a key path as `service.credentials` or `steps[2].upgrade.timeout`."""
    out = ""
    for part in path:
        if not isinstance(part, int) and len(str(part)) > 40:
            part = str(part)[:37] + "..."
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part and all(c.isalnum() or c in "_-" for c in part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def article(json_type: str) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing",
             "object or null": "a mapping (or nothing)"}
    return names.get(json_type, json_type)


def show(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """Join the lines of `text` (a YAML error spans several) with single spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
