"""The plan's YAML document: parsed defensively, with a map from key paths to lines.

Nesting and alias expansion are bounded while the YAML is composed (a "billion
laughs" file is refused after a few thousand nodes), duplicate keys are
refused, dates stay strings. yaml is imported inside the functions so that
`orchestrator schema` and `--help` do not pay for it.
"""

from __future__ import annotations

from collections import deque
from functools import cache
from typing import Any

from orchestrator.errors import InputError
from orchestrator.plan.problems import KeyPath, format_path, one_line, show

MAX_NODES = 10_000  # YAML nodes after alias expansion; a real plan has < 300
MAX_DEPTH = 32  # nesting of YAML collections; a real plan needs 5
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


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
def loader_class() -> type:
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


def read_yaml(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse one YAML document; return the data and a map key path -> line."""
    import yaml

    loader, root = None, None
    try:
        loader = loader_class()(text)  # the reader checks for non-printable characters here
        root = loader.get_single_node()
        if root is None:
            return None, {}
        data = loader.construct_document(root)
    except _Refused as exc:
        raise InputError(f"{source}:{exc.mark.line + 1}: refused: {exc}", hint=exc.hint) from None
    except _DuplicateKey as exc:
        line = exc.second.start_mark.line + 1
        where = path_of(root, exc.second) if root is not None else ()
        prefix = f"{format_path(where)}: " if where else ""
        raise InputError(f"{source}:{line}: {prefix}duplicate key {show(exc.key)} "
                         f"(first at line {exc.first.start_mark.line + 1})",
                         hint="each key may appear once in a mapping") from None
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(source, exc) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(f"{source}:{line}: YAML syntax: unacceptable character #x{exc.character:04x} "
                         f"(offset {exc.position})", hint="the plan must be plain YAML text; "
                         "control characters are not allowed") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML: {one_line(str(exc))}",
                         hint="check the YAML syntax") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, line_map(root)


def syntax_error(source: str, exc: Any) -> InputError:
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
    return InputError(f"{where}: {label}: {one_line(problem)}{col}", hint=hint)


def line_map(root: Any) -> dict[KeyPath, int]:
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


def path_of(root: Any, target: Any) -> KeyPath:
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


def line_at(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    path = tuple(p if isinstance(p, int) else str(p) for p in path)
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path)

