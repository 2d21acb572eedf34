"""Rewrite one string value of an Orthanc configuration file in place, keeping every other
byte (comments, layout, trailing commas) as the admin wrote it."""

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
    # Variables are replaced by as many digits, so offsets stay those of the text.
    masked = VARIABLE.sub(lambda m: "0" * len(m.group()), text)
    start = 1 if masked.startswith("\ufeff") else 0
    try:
        doc = jsonc.parse(masked, start)
    except jsonc.JsonSyntaxError as exc:
        line, col = jsonc.line_col(text, exc.offset)
        raise InputError(f"cannot set \"{key}\": the configuration does not parse at line {line}, "
                         f"column {col}: {exc.message}", hint="fix the file first") from None
    members = [m for m in doc.members if m.key == key] if isinstance(doc.value, dict) else []
    where = "at the top level of this file"
    if section is not None:
        outer = [m for m in doc.members if m.key == section] if isinstance(doc.value, dict) else []
        inner = jsonc.parse(masked, outer[-1].value_start) if outer else None
        where = f"in the \"{section}\" object of this file"
        members = [m for m in inner.members if m.key == key] \
            if inner is not None and isinstance(inner.value, dict) else []
        key = f"{section}.{key}"
    if not members:
        raise InputError(f"cannot set \"{key}\": it is not set {where}",
                         hint="add it by hand, or point to the file that defines it")
    member = members[-1]
    if not member.is_string:
        line, col = jsonc.line_col(text, member.value_start)
        raise InputError(f"cannot set \"{key}\": its value at line {line}, column {col} "
                         "is not a string literal", hint="make it a \"...\" string first")
    literal = json.dumps(new_value, ensure_ascii=False)
    return text[:member.value_start] + literal + text[member.value_end:]


def _has_surrogates(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)
