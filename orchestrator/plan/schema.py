"""The plan's JSON Schema: the shipped document, its step kinds, and its errors in plain words.

jsonschema is imported inside `_validator` so that `orchestrator schema` does
not pay for it. Every validation error becomes a `Problem` with a line and a hint.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
from functools import cache
from pathlib import Path
from typing import Any

from orchestrator.plan.document import line_at
from orchestrator.plan.problems import KeyPath, Problem, article, kind_of, one_line, show

PATH_REF = "#/$defs/path"
# Read by path rather than importlib.resources: the package is always installed as files,
# and importlib.resources alone costs `orchestrator schema` about 18 ms.
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "data" / "plan.schema.json"


def plan_schema() -> dict:
    """Return the plan's JSON Schema (draft 2020-12), as shipped in the package data."""
    return copy.deepcopy(schema_document())


def step_kinds() -> tuple[str, ...]:
    """Return every step kind the schema knows, in schema order."""
    return tuple(step_branches()[1]["properties"])


@cache
def schema_document() -> dict:
    """The shipped schema (package data, installed as a plain file beside the package)."""
    return json.loads(SCHEMA_FILE.read_text("utf-8"))


@cache
def _validator() -> Any:
    from jsonschema.validators import Draft202012Validator

    return Draft202012Validator(schema_document())


def deref(node: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = schema_document()["$defs"][ref.removeprefix("#/$defs/")]
    return node


def step_branches() -> tuple[dict, dict]:
    """The step schema's (bare string, one-key mapping) branches."""
    branches = schema_document()["$defs"]["step"]["oneOf"]
    bare = next(b for b in branches if b.get("type") == "string")
    keyed = next(b for b in branches if b.get("type") == "object")
    return bare, keyed


def schema_problems(raw: dict, lines: dict[KeyPath, int]) -> list[Problem]:
    problems: list[Problem] = []
    for error in _validator().iter_errors(raw):
        for leaf in _leaves(error):
            problems.extend(_translate(leaf, lines))
    return list(dict.fromkeys(problems))


def _leaves(error: Any) -> list[Any]:
    """For a oneOf/anyOf failure, the errors of the one branch whose type fits the value."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    branches: dict[int, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [errs for errs in branches.values()
               if not any(e.validator == "type" and not e.relative_path for e in errs)]
    if len(fitting) != 1:
        return [error]  # no branch fits the type: _translate says what forms are accepted
    return [leaf for sub in fitting[0] for leaf in _leaves(sub)]


def _is_step(path: KeyPath) -> bool:
    return len(path) == 2 and path[0] == "steps" and isinstance(path[1], int)


def _translate(error: Any, lines: dict[KeyPath, int]) -> list[Problem]:
    """Turn one jsonschema error into problems with a plain message, a line and a hint."""
    path: KeyPath = tuple(error.absolute_path)
    kind, value, schema = error.validator, error.instance, error.schema
    secret = "credentials" in path

    def at(p: KeyPath, message: str, hint: str | None = None) -> Problem:
        return Problem(line_at(lines, p), p, message, hint or "see docs/plans.md or `orchestrator schema`")

    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        out = []
        for key in (k for k in value if k not in allowed):
            near = difflib.get_close_matches(str(key), allowed, n=1)
            maybe = f"did you mean {near[0]!r}? " if near else ""
            if key == "password":
                out.append(at(path + (key,), "an inline password is not accepted",
                              "name an environment variable (password_env: ORTHANC_PASSWORD) "
                              "or a file of mode 0600 (password_file: /root/.orthanc-pass)"))
            elif _is_step(path):
                out.append(at(path + (key,), f"unknown step kind {show(key)}",
                              f"{maybe}known kinds: {', '.join(allowed)}"))
            else:
                out.append(at(path + (key,), "unknown key",
                              f"{maybe}allowed here: {', '.join(allowed)}"))
        return out
    if kind == "required":
        props = schema.get("properties", {})
        missing = [k for k in error.validator_value if isinstance(value, dict) and k not in value]
        return [at(path, f"missing required key {k!r}", f"add `{k}:` ({_describe(props.get(k, {}))})")
                for k in missing]
    if kind == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        shown = "" if secret else f" {show(value)}"
        hint = "quote it to make it a string" if expected == "string" and isinstance(
            value, (int, float, bool)) else schema.get("description")
        return [at(path, f"expected {article(expected)}, found {kind_of(value)}{shown}", hint)]
    if kind == "enum" and _is_step(path):
        keyed = step_branches()[1]
        if value in keyed["properties"]:
            needs = deref(keyed["properties"][value]).get("required", [])
            return [at(path, f"step {value!r} needs options",
                       f"write it as `- {value}: {{{', '.join(f'{k}: ...' for k in needs)}}}`")]
        kinds = list(keyed["properties"])
        near = difflib.get_close_matches(str(value), kinds, n=1)
        maybe = f"did you mean {near[0]!r}? " if near else ""
        return [at(path, f"unknown step kind {show(value)}", f"{maybe}known kinds: {', '.join(kinds)}")]
    if kind == "enum":
        return [at(path, f"{show(value)} is not one of: {', '.join(map(str, error.validator_value))}",
                   schema.get("description"))]
    if kind == "const":
        return [at(path, f"must be {show(error.validator_value)}, found {show(value)}",
                   schema.get("description"))]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return [at(path, f"must be {op} {error.validator_value}, found {show(value)}",
                   schema.get("description"))]
    if kind in ("maxProperties", "minProperties") and _is_step(path):
        if not value:
            return [at(path, "empty step", "write a step kind, e.g. `- preflight`")]
        return [at(path, f"a step has exactly one key, its kind; found {len(value)}: "
                         f"{', '.join(map(show, value))}",
                   "put each step in its own list item, e.g. `- stop-service: {timeout: 120}`")]
    if kind == "minProperties":
        return [at(path, "must not be empty", schema.get("description"))]
    if kind in ("minItems", "minLength"):
        return [at(path, "must not be empty", schema.get("description"))]
    if kind == "pattern":
        shown = "the value" if secret else show(value)
        noun, _, detail = schema.get("description", "valid: ").partition(": ")
        return [at(path, f"{shown} is not {noun}", detail)]
    if kind == "maxLength":
        return [at(path, f"longer than {error.validator_value} characters")]
    if kind in ("oneOf", "anyOf") and _is_step(path):
        return [at(path, f"expected a step, found {kind_of(value)}",
                   "a step is a kind (`- preflight`) or a one-key mapping (`- upgrade: {timeout: 7200}`)")]
    return [at(path, one_line(error.message), schema.get("description"))]


def _describe(sub: dict) -> str:
    """A property's own description, else the one of the definition it refers to."""
    return sub.get("description") or deref(sub).get("description") or "see `orchestrator schema`"


def finite_problems(value: Any, path: KeyPath, lines: dict[KeyPath, int]) -> list[Problem]:
    """NaN and infinity pass every JSON Schema bound: refuse them here."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(line_at(lines, path), path, f"must be a finite number, found {value}",
                        "write a plain number, e.g. 600")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in finite_problems(v, path + (k,), lines)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in finite_problems(v, path + (i,), lines)]
    return []

