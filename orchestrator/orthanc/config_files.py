"""The files of an Orthanc configuration, read as Orthanc 1.10 reads them: which files (a file,
or every `*.json` of a folder), their bounded bytes, `${VAR}` substitution in the raw text
(comments included), and JsonCpp parsing, with every offset mapped back to the file's own
line and column. `config.py` turns the merged values into the typed configuration.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.orthanc import jsonc
from orchestrator.paths import read_regular_file

MAX_FILE_BYTES = 16 * 1024 * 1024  # a configuration is kilobytes; refuse to slurp a disk image

# Orthanc's own pattern (Toolbox::SubstituteVariables), alternatives in the same order.
VARIABLE = re.compile(r"""\$\{([^:]*?)\}|\$\{([^:]*?):-([^'"]*?)\}"""
                       r"""|\$\{([^:]*?):-"([^"]*?)"\}|\$\{([^:]*?):-'([^']*?)'\}""")


class ConfigSyntaxError(InputError):
    """A configuration file Orthanc would refuse, with the place as data."""

    def __init__(self, file: Path, line: int, column: int, message: str, hint: str):
        super().__init__(f"{file}, line {line}, column {column}: {message}", hint)
        self.file = file
        self.line = line
        self.column = column


# -- variable substitution ----------------------------------------------------------
@dataclass
class Substituted:
    text: str
    spans: list[tuple[int, int, int, int]]  # (out_start, out_end, raw_start, raw_end)
    undefined: list[tuple[str, int, int]]  # (name, raw offset, out offset)

    def raw_offset(self, offset: int) -> int:
        """Map an offset in the substituted text back to the file's text."""
        i = bisect.bisect_right([s[0] for s in self.spans], offset) - 1
        if i < 0:
            return offset
        out_start, out_end, raw_start, raw_end = self.spans[i]
        return raw_start if offset < out_end else raw_end + (offset - out_end)


def substitute(raw: str, environ: Mapping[str, str], file: Path) -> Substituted:
    pieces: list[str] = []
    spans: list[tuple[int, int, int, int]] = []
    undefined: list[tuple[str, int, int]] = []
    pos = out = 0
    for m in VARIABLE.finditer(raw):
        pieces.append(raw[pos:m.start()])
        out += m.start() - pos
        simple, n2, d2, n3, d3, n4, d4 = m.groups()
        name = simple or n2 or n3 or n4
        if not name:
            line, col = jsonc.line_col(raw, m.start())
            raise ConfigSyntaxError(file, line, col, f"{m.group()!r} has no variable name",
                                    "Orthanc stops with 'Internal error' on it: name the variable")
        default = None if simple else (d2 if n2 else d3 if n3 else d4)
        if name in environ:
            value = environ[name]
        else:
            value = default or ""
            if default is None:
                undefined.append((name, m.start(), out))
        pieces.append(value)
        spans.append((out, out + len(value), m.start(), m.end()))
        out += len(value)
        pos = m.end()
    if not spans:
        return Substituted(raw, [], [])
    pieces.append(raw[pos:])
    return Substituted("".join(pieces), spans, undefined)


# -- one file -------------------------------------------------------------------------
@dataclass
class Source:
    path: Path
    raw: str
    sub: Substituted
    doc: jsonc.Document

    def where(self, offset: int) -> tuple[int, int]:
        return jsonc.line_col(self.raw, self.sub.raw_offset(offset))

    def place(self, offset: int) -> str:
        line, col = self.where(offset)
        return f"{self.path}, line {line}, column {col}"


def read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{path} is {size} bytes: too large for an Orthanc configuration",
                             hint="point to the configuration file or folder")
        data = read_regular_file(path, MAX_FILE_BYTES, what="Orthanc configuration")
    except PermissionError as exc:
        raise InputError(f"cannot read {path}: permission denied",
                         hint="run as root or as the user Orthanc runs as") from exc
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}",
                         hint="check the configuration path") from exc
    if data.startswith(b"\xef\xbb\xbf"):  # JsonCpp skips a UTF-8 BOM
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def read_file(path: Path, environ: Mapping[str, str], warnings: list[str]) -> Source:
    raw = read_text(path)
    sub = substitute(raw, environ, path)
    try:
        doc = jsonc.parse(sub.text)
    except jsonc.JsonSyntaxError as exc:
        line, col = jsonc.line_col(raw, sub.raw_offset(exc.offset))
        hint = ("Orthanc passes such text through unchanged, but the tool does not guess what "
                "it means: save the file as UTF-8" if exc.orthanc_accepts else
                "Orthanc refuses this file too (\"does not follow the JSON syntax\"): fix it")
        raise ConfigSyntaxError(path, line, col, exc.message, hint) from None
    src = Source(path, raw, sub, doc)
    if not isinstance(doc.value, dict):
        line, col = src.where(doc.start)
        raise ConfigSyntaxError(path, line, col, "the configuration must be a JSON object { ... }",
                                "Orthanc refuses any other JSON value")
    for name, raw_offset, out_offset in sub.undefined:
        if not doc.in_comment(sub.text, out_offset):
            line, _ = jsonc.line_col(raw, raw_offset)
            warnings.append(f"{path}, line {line}: ${{{name}}} is not set in the environment: "
                            "Orthanc substitutes an empty string")
    for dup in doc.duplicates:
        first, _ = src.where(dup.first_offset)
        line, _ = src.where(dup.offset)
        where = ".".join(str(p) for p in dup.path + (dup.key,))
        warnings.append(f"{path}, line {line}: \"{where}\" is set again (first at line {first}): "
                        "Orthanc uses this last one")
    if doc.trailing is not None:
        line, _ = src.where(doc.trailing)
        warnings.append(f"{path}, line {line}: text after the closing '}}' is ignored by Orthanc")
    return src



def config_files(given: Path) -> tuple[tuple[Path, ...], Path]:
    """Return the files Orthanc reads for `given` and the folder relative paths start from."""
    try:
        is_dir = given.is_dir()
        exists = is_dir or given.exists()
    except OSError as exc:
        raise InputError(f"cannot access {given}: {exc.strerror or exc}",
                         hint="check the configuration path and its permissions") from exc
    if not exists:
        raise InputError(f"no Orthanc configuration at {given}",
                         hint="give the configuration file or folder Orthanc is started with")
    if not is_dir:
        return (given,), given.parent
    try:
        files = sorted(p for p in given.iterdir()
                       if p.name.lower().endswith(".json") and not p.is_dir())
    except OSError as exc:
        raise InputError(f"cannot list {given}: {exc.strerror or exc}",
                         hint="run as root or as the user Orthanc runs as") from exc
    if not files:
        raise InputError(f"no *.json file in {given}",
                         hint="Orthanc would start on built-in defaults: give the right folder")
    return tuple(files), given
