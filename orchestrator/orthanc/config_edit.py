"""Rewrite one value of an Orthanc configuration file in place, keeping every other byte
(comments, layout, trailing commas) as the admin wrote it."""

from __future__ import annotations

import json

from orchestrator.errors import InputError
from orchestrator.orthanc import jsonc
from orchestrator.orthanc.config_files import VARIABLE


def set_string_value(text: str, key: str, new_value: str, *, section: str | None = None) -> str:
    """Return `text` with the string value of top-level `key` replaced; every other byte kept.

    With `section`, the key is looked up inside that top-level object instead
    (`section="PostgreSQL", key="Database"`: the relocate of a database index).

    Comments, formatting and trailing commas are preserved. If the key is set
    twice, the last one (the one Orthanc uses) is replaced; a value written with
    `${VAR}` is replaced whole. Raise InputError if the key is not set where it
    is looked up or its value is not a string literal. To keep every byte of a file,
    read it with encoding="utf-8", errors="surrogateescape", newline="" and write
    it back the same way.
    """
    if "\x00" in new_value or _has_surrogates(new_value):
        raise InputError(f"cannot set \"{key}\": the new value has a NUL or non-UTF-8 character",
                         hint="use a plain path")
    member = _member(text, key, section)
    if not member.is_string:
        line, col = jsonc.line_col(text, member.value_start)
        raise InputError(f"cannot set \"{_name(key, section)}\": its value at line {line}, "
                         f"column {col} is not a string literal",
                         hint="make it a \"...\" string first")
    literal = json.dumps(new_value, ensure_ascii=False)
    return text[:member.value_start] + literal + text[member.value_end:]


def set_int_value(text: str, key: str, new_value: int) -> str:
    """Return `text` with the integer value of top-level `key` replaced, or the key added
    right after the opening brace when the file does not set it; every other byte kept.

    Raise InputError when the value set is not an integer literal (a `${VAR}`, say).
    """
    try:
        member = _member(text, key, None)
    except _Unset:
        brace = text.find("{")
        comma = "" if text[brace + 1:].lstrip().startswith("}") else ","
        return (text[:brace + 1] + f"\n  {json.dumps(key)}: {int(new_value)}{comma}"
                + text[brace + 1:])
    literal = text[member.value_start:member.value_end]
    if member.is_string or not literal.lstrip("-").isdigit():
        line, col = jsonc.line_col(text, member.value_start)
        raise InputError(f"cannot set \"{key}\": its value at line {line}, column {col} is not "
                         "an integer literal", hint="write the number itself there first")
    return text[:member.value_start] + str(int(new_value)) + text[member.value_end:]


class _Unset(InputError):
    """The key is not set where it is looked up."""


def _name(key: str, section: str | None) -> str:
    return f"{section}.{key}" if section else key


def _member(text: str, key: str, section: str | None) -> jsonc.Member:
    """The last member named `key` (the one Orthanc uses), at the top level or in `section`."""
    # Variables are replaced by as many digits, so offsets stay those of the text.
    masked = VARIABLE.sub(lambda m: "0" * len(m.group()), text)
    start = 1 if masked.startswith("\ufeff") else 0
    try:
        doc = jsonc.parse(masked, start)
    except jsonc.JsonSyntaxError as exc:
        line, col = jsonc.line_col(text, exc.offset)
        raise InputError(f"cannot set \"{_name(key, section)}\": the configuration does not "
                         f"parse at line {line}, column {col}: {exc.message}",
                         hint="fix the file first") from None
    if not isinstance(doc.value, dict):
        raise InputError(f"cannot set \"{_name(key, section)}\": the file is not a JSON object",
                         hint="is this an Orthanc configuration?")
    members = [m for m in doc.members if m.key == key]
    where = "at the top level of this file"
    if section is not None:
        outer = [m for m in doc.members if m.key == section]
        inner = jsonc.parse(masked, outer[-1].value_start) if outer else None
        where = f"in the \"{section}\" object of this file"
        members = [m for m in inner.members if m.key == key] \
            if inner is not None and isinstance(inner.value, dict) else []
    if not members:
        raise _Unset(f"cannot set \"{_name(key, section)}\": it is not set {where}",
                     hint="add it by hand, or point to the file that defines it")
    return members[-1]


def _has_surrogates(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)
