"""Survey an Orthanc installation for `inspect`: config, index, binary, hazards, and a running
server's own facts. Reads only; `orchestrator.report.inspect` renders the result.

A running Orthanc holds its SQLite index locked, so the file cannot tell its schema
version or counts. When the server answers on the config's HTTP port, those facts
are read from its REST API instead, the hazards are judged on them, and a note
says so: a healthy running server is not a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.errors import CommandError, InputError, OrchestratorError
from orchestrator.host.changes import Changes
from orchestrator.host.databases import Databases
from orchestrator.host.host import make_databases
from orchestrator.host.runner import Runner
from orchestrator.orthanc.binary import (OrthancVersion, binary_version, expected_schema,
                                         schema_is_known)
from orchestrator.orthanc.config import OrthancConfig, load_config
from orchestrator.orthanc.hazards import Hazard, Severity, assess
from orchestrator.orthanc.index import IndexFacts, read_index
from orchestrator.orthanc.plugin_index import DatabaseView, view_database
from orchestrator.orthanc.rest import OrthancClient
from orchestrator.paths import open_to_others

REST_COUNTS = {"CountPatients": "patients", "CountStudies": "studies", "CountSeries": "series",
               "CountInstances": "instances"}


@dataclass(frozen=True)
class ServerFacts:
    """What a running Orthanc says of itself over REST."""

    url: str
    version: str
    database_version: int | None
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return {"url": self.url, "version": self.version,
                "database_version": self.database_version, "counts": dict(self.counts)}


@dataclass(frozen=True)
class Survey:
    """Everything `inspect` shows, as data (`to_dict()` is the --json document)."""

    config: OrthancConfig
    index: IndexFacts | None  # None when the index is not in SQLite
    binary: Path | None
    version: OrthancVersion | None
    hazards: tuple[Hazard, ...]
    binary_error: str | None = None
    service: dict | None = None  # the service manager's view, when a probe is given
    server: ServerFacts | None = None  # the running server's facts, when the index is locked
    notes: tuple[str, ...] = ()
    database: DatabaseView | None = None  # the PostgreSQL / MySQL sections and index facts

    def to_dict(self) -> dict:
        index = self.index.to_dict() if self.index is not None else {
            "skipped": f"the index is in {self.config.index_backend}, not in a SQLite file"}
        version = self.version
        return {
            "ok": True,
            "exit_code": 0,
            "command": "inspect",
            "hazards": [h.to_dict() for h in self.hazards],
            "notes": list(self.notes),
            "config": self.config.to_dict(),
            "index": index,
            "server": self.server.to_dict() if self.server else None,
            "database": self.database.to_dict() if self.database and self.database.sections
            else None,
            "binary": {
                "path": str(self.binary) if self.binary else None,
                "version": str(version) if version else None,
                "expected_schema": expected_schema(version) if version else None,
                "schema_known": schema_is_known(version) if version else None,
                "error": self.binary_error,
            },
            "service": self.service,
        }


def survey(config_path: str | Path, *, binary: Path | None, runner: Runner,
           environ: Mapping[str, str] | None = None,
           service_probe: Callable[[OrthancConfig], dict] | None = None,
           client_for: Callable[[OrthancConfig], OrthancClient | None] | None = None,
           databases: Databases | None = None) -> Survey:
    """Read the configuration (InputError if bad), the index, the binary; assess the hazards.

    Only the configuration can make this fail: a missing index or a binary that does
    not run are facts to report. `service_probe` gives the service manager's view
    (state, PID, unit); `client_for` a REST client for the server of this config,
    asked only when the index is locked by a running Orthanc. `databases` reads a
    PostgreSQL / MySQL index (default: the client tools, on a port that cannot write).
    """
    config = load_config(config_path, environ)
    index = read_index(config.index_dir) if config.index_backend == "sqlite" else None
    version = error = None
    if binary is not None:
        try:
            version = binary_version(binary, runner)
        except (CommandError, InputError) as exc:
            error = exc.message
    server, notes, judged = None, [], index
    if index is not None and index.locked and client_for is not None and config.http_enabled:
        server, why_not = _ask_server(config, client_for)
        if server is not None:
            judged = _as_the_server_says(index, server)
            who = f"pid {index.locked_by}" if index.locked_by else "an Orthanc process"
            notes.append(f"Orthanc {server.version} is running ({who} holds {index.path}): its "
                         f"schema version and counts were read from its REST API at {server.url}")
        else:
            notes.append(f"the running server's REST API did not answer: {why_not}")
    # A dry port: reads run, and nothing it could be asked to change ever would.
    database = view_database(config, databases or make_databases(Changes(dry=True), runner))
    hazards = assess(config, judged, version, binary_error=error, **database.hazard_args())
    hazards = [*hazards, *_storage_open_to_others(config)]
    service = service_probe(config) if service_probe else None
    return Survey(config, index, binary, version, tuple(hazards), error, service, server,
                  tuple(notes), database)


def _storage_open_to_others(config: OrthancConfig) -> list[Hazard]:
    """Patient data in a folder every local user can enter (Debian keeps /var/lib/orthanc 0750)."""
    found: dict[Path, str] = {}
    for what, folder in (("StorageDirectory", config.storage_dir), ("IndexDirectory", config.index_dir)):
        open_at = open_to_others(folder) if Path(folder).exists() else None
        if open_at is not None:
            found.setdefault(open_at, f"{what} {folder}")
    return [Hazard("storage-world-readable", Severity.WARNING,
                   f"{where}: every local user can enter {open_at}, so patient data is readable "
                   "wherever the files' modes allow",
                   f"chmod o-rwx {open_at} (Debian keeps /var/lib/orthanc at 0750)")
            for open_at, where in found.items()]


def _ask_server(config: OrthancConfig, client_for: Callable[[OrthancConfig], OrthancClient | None]
                ) -> tuple[ServerFacts | None, str]:
    client = client_for(config)
    if client is None:
        return None, f"no usable URL for {config.local_url}"
    try:
        with client:
            system, stats = client.system(), client.statistics()
    except OrchestratorError as exc:
        return None, exc.message
    db = system.get("DatabaseVersion")
    return ServerFacts(client.base_url, str(system.get("Version", "?")),
                       db if isinstance(db, int) and not isinstance(db, bool) else None,
                       {REST_COUNTS[k]: v for k, v in stats.items()}), ""


def _as_the_server_says(index: IndexFacts, server: ServerFacts) -> IndexFacts:
    """The index facts to judge hazards on: the file's, with what the server reported in
    place of what the lock hid (tables stay unknown)."""
    return replace(index, locked=False, error=None, schema_version=server.database_version,
                   counts=dict(server.counts))
