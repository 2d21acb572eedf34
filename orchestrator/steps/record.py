"""Step data as frozen dataclasses with a JSON round-trip: options, intents and facts.

A step's options come from the plan, its intent and facts go to the journal as
plain JSON objects; both cross the boundary through `to_json`/`from_json`
here, driven by the dataclass's type hints (Path, tuples, nested records,
optional values, enums). A field's JSON key is its name, or `metadata["key"]`
(e.g. relocate's `from`, a Python keyword).

`from_json` is strict: a missing required key, a value of the wrong type or an
unknown key raises `RecordError` naming the key path, so a journal written by
another version is refused with a clear message instead of half-read.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import ClassVar, TypeVar, Union

from orchestrator.errors import InputError

# A JSON value a step only shows or hands on unread (a report's nested dict).
Json = Union[dict[str, object], list[object], str, int, float, bool, None]

R = TypeVar("R", bound="Record")


class RecordError(InputError):
    """Step data that does not fit its record type (an old or foreign journal, a bad plan)."""


class Record:
    """Mixin for frozen dataclasses that travel as JSON objects."""

    what: ClassVar[str] = "step data"

    def to_json(self) -> dict[str, object]:
        """A JSON object; a field left at an empty default (None, "", (), {}) is omitted."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value in _EMPTY and value == _default(f):
                continue
            out[_key(f)] = _dump(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, object] | None, *, where: str = "") -> R:
        where = where or cls.what
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected a mapping, got {type(data).__name__}",
                              hint=_HINT)
        fields = {_key(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise RecordError(f"{where}: unknown key {unknown[0]!r}", hint=_HINT)
        hints = _hints(cls)
        values = {}
        for key, f in fields.items():
            if key in data:
                values[f.name] = _load(hints[f.name], data[key], f"{where}.{key}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where}: missing key {key!r}", hint=_HINT)
        return cls(**values)


_HINT = ("the journal (or plan) was written by another version of orchestrator: finish that "
         "run with the version that started it, or move the journal aside")


_EMPTY = (None, "", (), {})


def _default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


@functools.cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


def _dump(value: object) -> object:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


def _load(hint: object, value: object, where: str) -> object:  # noqa: PLR0911, C901
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _load(arg, value, where)
            except RecordError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else RecordError(
            f"{where}: unexpected value {value!r:.40}", hint=_HINT)
    if hint is object:
        return value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, where=where)  # type: ignore[arg-type]
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(value)
        except ValueError:
            raise RecordError(f"{where}: {value!r} is not one of "
                              f"{[m.value for m in hint]}", hint=_HINT) from None
    if hint is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise _wrong(where, "a path", value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _wrong(where, "a list", value)
        item = args[0] if args else object
        items = [_load(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(where, "a mapping", value)
        item = args[1] if len(args) == 2 else object
        return {str(k): _load(item, v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _wrong(where, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _wrong(where, "an integer", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _wrong(where, "a number", value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _wrong(where, "a string", value)
    raise TypeError(f"{where}: no JSON mapping for {hint!r}")  # a bug in a record type


def _wrong(where: str, expected: str, value: object) -> RecordError:
    return RecordError(f"{where}: expected {expected}, got {value!r:.40}", hint=_HINT)
