"""The `inspect` report: gather the facts once, render them as JSON or as text.

The text is rendered from the very dict that `--json` prints, so both always
carry the same facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import CommandError, InputError
from orchestrator.host.runner import Runner
from orchestrator.orthanc.binary import (OrthancVersion, binary_version, expected_schema,
                                         schema_is_known)
from orchestrator.orthanc.config import OrthancConfig, load_config
from orchestrator.orthanc.hazards import Hazard, assess
from orchestrator.orthanc.index import IndexFacts, read_index
from orchestrator.report import table


@dataclass(frozen=True)
class InspectReport:
    config: OrthancConfig
    index: IndexFacts | None  # None when the index is not in SQLite
    binary: Path | None
    version: OrthancVersion | None
    hazards: tuple[Hazard, ...]
    binary_error: str | None = None
    service: dict | None = None  # the service manager's view, once a probe is wired in

    def to_dict(self) -> dict:
        index = self.index.to_dict() if self.index is not None else {
            "skipped": f"the index is in {self.config.index_backend}, not in a SQLite file"}
        version = self.version
        return {
            "ok": True,
            "hazards": [h.to_dict() for h in self.hazards],
            "config": self.config.to_dict(),
            "index": index,
            "binary": {
                "path": str(self.binary) if self.binary else None,
                "version": str(version) if version else None,
                "expected_schema": expected_schema(version) if version else None,
                "schema_known": schema_is_known(version) if version else None,
                "error": self.binary_error,
            },
            "service": self.service,
        }


def gather(config_path: str | Path, *, binary: Path | None, runner: Runner,
           environ: Mapping[str, str] | None = None,
           service_probe: Callable[[OrthancConfig], dict] | None = None) -> InspectReport:
    """Read the configuration (InputError if bad), the index, the binary; assess the hazards.

    Only the configuration can make this fail: a missing index or a binary that
    does not run are facts to report. `service_probe` is the hook for the
    service manager's view (state, PID, unit), filled in by the caller.
    """
    config = load_config(config_path, environ)
    index = read_index(config.index_dir) if config.index_backend == "sqlite" else None
    version = error = None
    if binary is not None:
        try:
            version = binary_version(binary, runner)
        except (CommandError, InputError) as exc:
            error = exc.message
    hazards = assess(config, index, version, binary_error=error)
    service = service_probe(config) if service_probe else None
    return InspectReport(config, index, binary, version, tuple(hazards), error, service)


# -- text --------------------------------------------------------------------------------
def render_text(data: dict) -> str:
    """Render `InspectReport.to_dict()` for a terminal: hazards first, then each section."""
    out = ["Hazards"]
    if not data["hazards"]:
        out.append("  (none)")
    for h in data["hazards"]:
        out.append(f"  {h['severity'].upper():8} {h['code']}: {_show(h['message'])}")
        out.append(f"  {'':8} hint: {_show(h['hint'])}")
    for title, key in (("Configuration", "config"), ("Index", "index"), ("Binary", "binary"),
                       ("Service", "service")):
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
