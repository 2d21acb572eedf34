"""Load a plan: YAML text -> a validated, typed `Plan`.

The only module that imports yaml and jsonschema, both lazily so that
`orchestrator --help` does not pay for them. Loading is defensive: the size is
checked before parsing; nesting and alias expansion are bounded while the YAML
is composed (a "billion laughs" file is refused after a few thousand nodes);
duplicate keys are refused; and every problem is reported as
`file:line: key.path: problem` with a hint, the line taken from the YAML node.

Relative paths resolve against the plan file's folder. Options get the defaults
written in the schema.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import stat
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path, PureWindowsPath
from typing import Any

from orchestrator.errors import InputError

MAX_PLAN_BYTES = 1 << 20  # 1 MiB: a real plan is a few hundred bytes
MAX_NODES = 10_000  # YAML nodes after alias expansion; a real plan has < 300
MAX_DEPTH = 32  # nesting of YAML collections; a real plan needs 5

KeyPath = tuple[Any, ...]
PATH_REF = "#/$defs/path"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class Manager(StrEnum):
    """Who starts and stops the service."""

    AUTO = "auto"
    SYSTEMD = "systemd"
    SYSV = "sysv"
    WINDOWS = "windows"
    PROCESS = "process"


@dataclass(frozen=True)
class CredentialsSpec:
    """Where the REST password comes from (never the password itself)."""

    username: str | None = None
    password_env: str | None = None
    password_file: Path | None = None


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    manager: Manager
    binary: Path
    config: Path
    user: str | None = None
    url: str | None = None  # None: http://127.0.0.1:<HttpPort of the config>
    credentials: CredentialsSpec | None = None
    pidfile: Path | None = None
    log_file: Path | None = None
    install_dir: str | None = None
    stop_grace: float = 30.0
    init_script: Path | None = None  # sysv: default /etc/init.d/<name>
    allow_unscoped_stop: bool = False  # sysv: stop with a script that kills every Orthanc


@dataclass(frozen=True)
class StepSpec:
    """One step: its kebab-case kind, its options (defaults filled in, paths resolved to
    absolute `Path`s), its 0-based index in `steps` and the line it starts on."""

    kind: str
    options: dict
    index: int
    line: int | None = None


@dataclass(frozen=True)
class Plan:
    source: Path
    version: int
    service: ServiceSpec
    steps: tuple[StepSpec, ...]
    state_dir: Path | None
    raw: dict


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
        return _one_line(text)


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


# -- public API --------------------------------------------------------------------------

def load_plan(path: str | Path) -> Plan:
    """Read, check and type the plan at `path`; raise InputError (exit 2) on any problem."""
    p = Path(path)
    shown = str(path)
    try:
        st = p.stat()
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{shown}: is a folder, not a plan file",
                             hint="give the plan's YAML file, e.g. playbooks/debian-systemd.yaml")
        if st.st_size > MAX_PLAN_BYTES:
            raise _too_big(shown, st.st_size)
        with open(p, "rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)  # bounded even when stat lies (a device, a pipe)
    except OSError as exc:
        raise InputError(f"{shown}: cannot read the plan: {exc.strerror or exc}",
                         hint="check the path and its permissions") from exc
    if len(data) > MAX_PLAN_BYTES:
        raise _too_big(shown, None)
    return parse_plan(_decode(data, shown), shown, base_dir=p.absolute().parent)


def parse_plan(text: str, source: str = "<plan>", *, base_dir: Path | None = None) -> Plan:
    """Check and type a plan given as text; relative paths resolve against `base_dir`
    (default: the current folder). Raise InputError (or PlanError) on any problem."""
    if len(text) > MAX_PLAN_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise _too_big(source, None)
    raw, lines = _read_yaml(text, source)
    if raw is None:
        raise InputError(f"{source}: the plan is empty",
                         hint="start from one of the example plans in playbooks/")
    if not isinstance(raw, dict):
        raise InputError(f"{source}:{lines[()]}: the plan must be a mapping (version, service, "
                         f"steps), not {_kind_of(raw)}",
                         hint="see docs/plans.md, or `orchestrator schema`")
    problems = _finite_problems(raw, (), lines) + _schema_problems(raw, lines)
    if not problems:
        problems = _cross_problems(raw, lines)
    if problems:
        raise PlanError(source, sorted(problems, key=lambda pr: (pr.line or 0, format_path(pr.path))))
    base = base_dir if base_dir is not None else Path.cwd()
    return _build(raw, lines, source, base)


def plan_schema() -> dict:
    """Return the plan's JSON Schema (draft 2020-12), as shipped in the package data."""
    return copy.deepcopy(_schema())


def step_kinds() -> tuple[str, ...]:
    """Return every step kind the schema knows, in schema order."""
    return tuple(_step_branches()[1]["properties"])


# -- YAML --------------------------------------------------------------------------------

class _Refused(Exception):
    """The YAML is refused while it is composed (too deep, too many nodes, a cycle)."""

    def __init__(self, message: str, mark: Any, hint: str):
        super().__init__(message)
        self.mark, self.hint = mark, hint


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: Any, second: Any):
        super().__init__(key)
        self.key, self.first, self.second = key, first, second


@cache
def _loader_class() -> type:
    import yaml
    from yaml.events import AliasEvent
    from yaml.nodes import MappingNode

    class Resolver(yaml.resolver.Resolver):
        # Dates stay strings: no plan value is a timestamp, and a malformed one
        # (2024-13-45) would otherwise fail inside the constructor.
        yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in rules if tag != _TIMESTAMP]
            for first, rules in yaml.resolver.Resolver.yaml_implicit_resolvers.items()}

    class Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                 yaml.composer.Composer, yaml.constructor.SafeConstructor, Resolver):
        """A SafeLoader that counts nodes as if aliases were expanded, and refuses
        deep nesting, recursive aliases and duplicate keys."""

        def __init__(self, stream: str):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.expanded = 0
            self.depth = 0
            self.open_anchors: set[str] = set()
            self.anchor_sizes: dict[str, int] = {}

        def _count(self, n: int, mark: Any) -> None:
            self.expanded += n
            if self.expanded > MAX_NODES:
                raise _Refused(f"more than {MAX_NODES} YAML nodes once aliases are expanded",
                               mark, "a plan is small: do not nest aliases (&anchor / *alias)")

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                if event.anchor in self.open_anchors:
                    raise _Refused(f"alias *{event.anchor} refers to a node that contains it",
                                   event.start_mark, "remove the recursive alias")
                self._count(self.anchor_sizes.get(event.anchor, 1), event.start_mark)
                return super().compose_node(parent, index)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", event.start_mark,
                               "a plan needs only a few levels")
            before = self.expanded
            self._count(1, event.start_mark)
            anchor = event.anchor
            if anchor is not None:
                self.open_anchors.add(anchor)
            node = super().compose_node(parent, index)
            if anchor is not None:
                self.open_anchors.discard(anchor)
                self.anchor_sizes[anchor] = self.expanded - before
            self.depth -= 1
            return node

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (yaml.YAMLError, _DuplicateKey, _Refused):
                raise
            except Exception as exc:  # noqa: BLE001 - see below
                # PyYAML's constructors fail on an explicit tag with a value it cannot take
                # with whatever error comes first: !!int abc (ValueError), !!int '' (IndexError),
                # !!bool x (KeyError), !!timestamp x (AttributeError). All are bad input.
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read this {node.tag} value: {exc}", node.start_mark) from None

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == _MERGE:
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node)
                    except TypeError:
                        continue  # unhashable: the base class reports it
                    if first is not key_node:
                        raise _DuplicateKey(key, first, key_node)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _read_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse one YAML document; return the data and a map key path -> line."""
    import yaml

    loader, root = None, None
    try:
        loader = _loader_class()(text)  # the reader checks for non-printable characters here
        root = loader.get_single_node()
        if root is None:
            return None, {}
        data = loader.construct_document(root)
    except _Refused as exc:
        raise InputError(f"{source}:{exc.mark.line + 1}: refused: {exc}", hint=exc.hint) from None
    except _DuplicateKey as exc:
        line = exc.second.start_mark.line + 1
        where = _path_of(root, exc.second) if root is not None else ()
        prefix = f"{format_path(where)}: " if where else ""
        raise InputError(f"{source}:{line}: {prefix}duplicate key {_show(exc.key)} "
                         f"(first at line {exc.first.start_mark.line + 1})",
                         hint="each key may appear once in a mapping") from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(source, exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(f"{source}:{line}: YAML syntax: unacceptable character #x{exc.character:04x} "
                         f"(offset {exc.position})", hint="the plan must be plain YAML text; "
                         "control characters are not allowed") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {_one_line(str(exc))}",
                         hint="check the YAML syntax") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _line_map(root)


def _syntax_error(source: str, exc: Any) -> InputError:
    import yaml

    mark = exc.problem_mark or exc.context_mark
    problem = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
    where = f"{source}:{mark.line + 1}" if mark else source
    col = f" (column {mark.column + 1})" if mark else ""
    hint = "check the indentation, colons and quotes near that line"
    if isinstance(exc, yaml.constructor.ConstructorError):
        hint = "a plan is plain YAML: remove the !tag (quote the value if it is a string)"
    elif "\t" in problem or "'\\t'" in problem:
        hint = "indent with spaces: YAML does not allow tabs for indentation"
    elif "special characters are not allowed" in problem:
        hint = "the plan must be YAML text; this looks like a binary file"
    label = "YAML" if isinstance(exc, yaml.constructor.ConstructorError) else "YAML syntax"
    return InputError(f"{where}: {label}: {_one_line(problem)}{col}", hint=hint)


def _line_map(root: Any) -> dict[KeyPath, int]:
    """Map each key path to the line of its key (mapping entry) or item (sequence)."""
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    lines: dict[KeyPath, int] = {(): root.start_mark.line + 1}
    queue: deque[tuple[KeyPath, Any]] = deque([((), root)])
    while queue:  # breadth first, so a mapping's own keys win over merged ones
        path, node = queue.popleft()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    lines[path + (key.value,)] = key.start_mark.line + 1
                    queue.append((path + (key.value,), value))
        elif isinstance(node, SequenceNode):
            for i, value in enumerate(node.value):
                lines[path + (i,)] = value.start_mark.line + 1
                queue.append((path + (i,), value))
    return lines


def _path_of(root: Any, target: Any) -> KeyPath:
    """The key path of the mapping holding the key node `target` (for duplicate keys)."""
    from yaml.nodes import MappingNode, SequenceNode

    queue: deque[tuple[KeyPath, Any]] = deque([((), root)])
    while queue:
        path, node = queue.popleft()
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if key is target:
                    return path
                queue.append((path + (getattr(key, "value", "?"),), value))
        elif isinstance(node, SequenceNode):
            queue.extend((path + (i,), v) for i, v in enumerate(node.value))
    return ()


def _line(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    path = tuple(p if isinstance(p, int) else str(p) for p in path)
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)


# -- schema ------------------------------------------------------------------------------

@cache
def _schema() -> dict:
    from importlib.resources import files

    return json.loads(files("orchestrator").joinpath("data/plan.schema.json").read_text("utf-8"))


@cache
def _validator() -> Any:
    from jsonschema.validators import Draft202012Validator

    return Draft202012Validator(_schema())


def _deref(node: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = _schema()["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _step_branches() -> tuple[dict, dict]:
    """The step schema's (bare string, one-key mapping) branches."""
    branches = _schema()["$defs"]["step"]["oneOf"]
    bare = next(b for b in branches if b.get("type") == "string")
    keyed = next(b for b in branches if b.get("type") == "object")
    return bare, keyed


def _schema_problems(raw: dict, lines: dict[KeyPath, int]) -> list[Problem]:
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
        return Problem(_line(lines, p), p, message, hint or "see docs/plans.md or `orchestrator schema`")

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
                out.append(at(path + (key,), f"unknown step kind {_show(key)}",
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
        shown = "" if secret else f" {_show(value)}"
        hint = "quote it to make it a string" if expected == "string" and isinstance(
            value, (int, float, bool)) else schema.get("description")
        return [at(path, f"expected {_article(expected)}, found {_kind_of(value)}{shown}", hint)]
    if kind == "enum" and _is_step(path):
        keyed = _step_branches()[1]
        if value in keyed["properties"]:
            needs = _deref(keyed["properties"][value]).get("required", [])
            return [at(path, f"step {value!r} needs options",
                       f"write it as `- {value}: {{{', '.join(f'{k}: ...' for k in needs)}}}`")]
        kinds = list(keyed["properties"])
        near = difflib.get_close_matches(str(value), kinds, n=1)
        maybe = f"did you mean {near[0]!r}? " if near else ""
        return [at(path, f"unknown step kind {_show(value)}", f"{maybe}known kinds: {', '.join(kinds)}")]
    if kind == "enum":
        return [at(path, f"{_show(value)} is not one of: {', '.join(map(str, error.validator_value))}",
                   schema.get("description"))]
    if kind == "const":
        return [at(path, f"must be {_show(error.validator_value)}, found {_show(value)}",
                   schema.get("description"))]
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return [at(path, f"must be {op} {error.validator_value}, found {_show(value)}",
                   schema.get("description"))]
    if kind in ("maxProperties", "minProperties") and _is_step(path):
        if not value:
            return [at(path, "empty step", "write a step kind, e.g. `- preflight`")]
        return [at(path, f"a step has exactly one key, its kind; found {len(value)}: "
                         f"{', '.join(map(_show, value))}",
                   "put each step in its own list item, e.g. `- stop-service: {timeout: 120}`")]
    if kind == "minProperties":
        return [at(path, "must not be empty", schema.get("description"))]
    if kind in ("minItems", "minLength"):
        return [at(path, "must not be empty", schema.get("description"))]
    if kind == "pattern":
        shown = "the value" if secret else _show(value)
        noun, _, detail = schema.get("description", "valid: ").partition(": ")
        return [at(path, f"{shown} is not {noun}", detail)]
    if kind == "maxLength":
        return [at(path, f"longer than {error.validator_value} characters")]
    if kind in ("oneOf", "anyOf") and _is_step(path):
        return [at(path, f"expected a step, found {_kind_of(value)}",
                   "a step is a kind (`- preflight`) or a one-key mapping (`- upgrade: {timeout: 7200}`)")]
    return [at(path, _one_line(error.message), schema.get("description"))]


def _describe(sub: dict) -> str:
    """A property's own description, else the one of the definition it refers to."""
    return sub.get("description") or _deref(sub).get("description") or "see `orchestrator schema`"


def _finite_problems(value: Any, path: KeyPath, lines: dict[KeyPath, int]) -> list[Problem]:
    """NaN and infinity pass every JSON Schema bound: refuse them here."""
    if isinstance(value, float) and not math.isfinite(value):
        return [Problem(_line(lines, path), path, f"must be a finite number, found {value}",
                        "write a plain number, e.g. 600")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _finite_problems(v, path + (k,), lines)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _finite_problems(v, path + (i,), lines)]
    return []


# -- cross-checks ------------------------------------------------------------------------

_NEEDS_STOPPED = ("snapshot", "relocate", "upgrade")


def _cross_problems(raw: dict, lines: dict[KeyPath, int]) -> list[Problem]:
    """Checks the schema cannot express: the service's state at each step, step order,
    credentials that cannot work."""
    out: list[Problem] = []

    def at(path: KeyPath, message: str, hint: str) -> None:
        out.append(Problem(_line(lines, path), path, message, hint))

    kinds = [s if isinstance(s, str) else next(iter(s)) for s in raw["steps"]]
    running, last_stop, last_start = True, None, None  # a plan starts on a running service
    for i, kind in enumerate(kinds):
        here = ("steps", i)
        if kind in _NEEDS_STOPPED and running:
            if last_start is not None:
                at(here, f"{kind} runs on a running service: steps[{last_start}] started it again",
                   f"move {kind} before that start-service")
            else:
                at(here, f"{kind} runs on a running service: no stop-service before it",
                   f"add `- stop-service` before {kind}")
        if kind == "health-check" and not running:
            at(here, f"health-check on a stopped service (steps[{last_stop}] stopped it)",
               "add `- start-service` before health-check")
        elif kind == "health-check" and last_start is None:
            at(here, "health-check has no start-service before it",
               "a health check proves a restart: add `- start-service` before it")
        if kind == "relocate" and "upgrade" in kinds[:i]:
            at(here, f"relocate comes after upgrade (steps[{kinds.index('upgrade')}])",
               "relocate first, so the upgrade runs on the new copy")
        if kind == "stop-service":
            running, last_stop = False, i
        elif kind == "start-service":
            running, last_start = True, i
        if kind == "upgrade" and "start-service" not in kinds[i + 1:]:
            at(here, "upgrade has no start-service after it",
               "add `- start-service` and `- health-check` after upgrade")

    creds = raw["service"].get("credentials") or {}
    cpath = ("service", "credentials")
    if "password_env" in creds and "password_file" in creds:
        at(cpath + ("password_file",), "give password_env or password_file, not both",
           "keep the one the service host provides")
    url = raw["service"].get("url")
    if url is not None:
        from orchestrator.orthanc.credentials import split_url

        try:
            _, in_url = split_url(url)
        except InputError as exc:
            at(("service", "url"), exc.message, exc.hint or "")
        else:
            if in_url is not None and in_url.password:
                at(("service", "url"), "an inline password is not accepted (user:password@ in the URL)",
                   "name it in credentials: {username: ..., password_env: VAR}")
            if ("password_env" in creds or "password_file" in creds) and "username" not in creds \
                    and not (in_url and in_url.username):
                at(cpath, "a password source without a username", "add credentials.username")
    elif ("password_env" in creds or "password_file" in creds) and "username" not in creds:
        at(cpath, "a password source without a username", "add credentials.username")
    return out


def check_against_config(plan: Plan, config: Any) -> None:
    """Refuse a plan that contradicts its Orthanc config (anything with `storage_dir` and
    `index_dir`): a relocate onto the folder it copies from (its `from`, else the database
    folder in use) would leave no rollback point."""
    in_use = {Path(config.storage_dir), Path(config.index_dir)}
    problems = []
    for step in plan.steps:
        if step.kind != "relocate":
            continue
        source = {Path(step.options["from"])} if step.options.get("from") else in_use
        if Path(step.options["to"]) in source:
            what = "the folder it copies from" if step.options.get("from") else \
                "the database folder in use"
            problems.append(Problem(
                step.line, ("steps", step.index, "relocate", "to"), f"{step.options['to']} is {what}",
                "relocate to a new folder (e.g. db-v7); the old one stays as the rollback point"))
    if problems:
        raise PlanError(str(plan.source), problems)


# -- typed plan --------------------------------------------------------------------------

def _build(raw: dict, lines: dict[KeyPath, int], source: str, base: Path) -> Plan:
    top = _normalize(raw, _schema(), base)
    svc = top["service"]
    cred = svc.get("credentials")
    service = ServiceSpec(
        name=svc["name"], manager=Manager(svc["manager"]), binary=svc["binary"],
        config=svc["config"], user=svc.get("user"), url=svc.get("url"),
        credentials=CredentialsSpec(cred.get("username"), cred.get("password_env"),
                                    cred.get("password_file")) if cred else None,
        pidfile=svc.get("pidfile"), log_file=svc.get("log_file"),
        install_dir=svc.get("install_dir"), stop_grace=float(svc["stop_grace"]),
        init_script=svc.get("init_script"), allow_unscoped_stop=bool(svc["allow_unscoped_stop"]))
    keyed = _step_branches()[1]["properties"]
    steps = []
    for i, item in enumerate(raw["steps"]):
        kind, options = (item, None) if isinstance(item, str) else next(iter(item.items()))
        options = _normalize(options or {}, keyed[kind], base)
        steps.append(StepSpec(kind, options, i, _line(lines, ("steps", i))))
    return Plan(source=Path(source), version=int(raw["version"]), service=service,
                steps=tuple(steps), state_dir=top.get("state_dir"), raw=raw)


def _normalize(value: Any, node: dict, base: Path) -> Any:
    """Copy `value`, filling in the schema's defaults and resolving $defs/path values."""
    if node.get("$ref") == PATH_REF and isinstance(value, str):
        return _resolve(value, base)
    node = _deref(node)
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for key, sub in node["properties"].items():
            if key not in out:
                default = sub.get("default", _deref(sub).get("default"))
                if default is None:
                    continue
                out[key] = copy.deepcopy(default)
            out[key] = _normalize(out[key], sub, base)
        return out
    return copy.deepcopy(value)


def _resolve(text: str, base: Path) -> Path:
    """An absolute path as given (POSIX or Windows style), else relative to `base`."""
    if PureWindowsPath(text).is_absolute() and not text.startswith("/"):
        return Path(text)  # C:\... or \\host\share: kept as written, for the Windows host
    return Path(os.path.normpath(base / text))  # an absolute `text` replaces `base`


# -- small helpers -----------------------------------------------------------------------

def _decode(data: bytes, source: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise InputError(f"{source}:{line}: binary data (a NUL byte at "
                         f"offset {nul}), not a YAML plan", hint="give the plan's YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})", hint="save the plan as UTF-8") from None


def _too_big(source: str, size: int | None) -> InputError:
    got = f" ({size} bytes)" if size is not None else ""
    return InputError(f"{source}: the plan is larger than {MAX_PLAN_BYTES} bytes{got}; refused "
                      "before parsing", hint="a plan is a short YAML file: is this the right file?")


def _kind_of(value: Any) -> str:
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


def _article(json_type: str) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "nothing",
             "object or null": "a mapping (or nothing)"}
    return names.get(json_type, json_type)


def _show(value: Any, limit: int = 40) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    text = _one_line(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(text: str) -> str:
    """Join the lines of `text` (a YAML error spans several) with single spaces."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())
