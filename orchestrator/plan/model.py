"""The typed plan: what a validated plan file says, as frozen dataclasses.

Built by `orchestrator.plan.normalize` once the YAML passed the schema and the
rules; nothing here reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


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
    """The service a plan upgrades: its name, manager, binary, config and how to reach it."""

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
    """A checked plan: the service, its steps in order, where its runs are journaled
    (`state_dir`, None: the default) and the raw mapping it was read from."""

    source: Path
    version: int
    service: ServiceSpec
    steps: tuple[StepSpec, ...]
    state_dir: Path | None
    raw: dict
