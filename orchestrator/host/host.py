"""The Host: every port a step may use, in one object, real or dry.

Reads (runner, files' reads, service status, REST, processes' reads) always
touch the real machine; changes go through the shared `Changes` recorder,
which alone decides whether they happen. `make_host(dry=...)` is the only
place the two flavours differ.

The ports a fake stands in for in tests (the REST client, the service's
status) are Protocols here; the host layer imports nothing above it.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from orchestrator.errors import Completed
from orchestrator.host.changes import Changes
from orchestrator.host.clock import Clock, RealClock
from orchestrator.host.databases import Databases
from orchestrator.host.files import Files
from orchestrator.host.mysql import MySQLClient
from orchestrator.host.postgresql import PostgreSQLClient
from orchestrator.host.processes import Processes
from orchestrator.host.runner import RealRunner, Runner
from orchestrator.host.service import ServicePort


class OrthancPort(Protocol):
    """The REST client of the service, as steps use it (reads only)."""

    base_url: str

    def system(self) -> dict: ...
    def statistics(self) -> dict: ...
    def close(self) -> None: ...


class ServiceStatusView(Protocol):
    """A service manager's status, as steps read it."""

    running: bool
    main_pid: int | None
    detail: str

    @property
    def state(self) -> Enum: ...

    def to_dict(self) -> dict: ...


class Commands:
    """Run plan-given commands (a change): argv lists only, never a shell."""

    def __init__(self, runner: Runner, changes: Changes):
        self.runner = runner
        self.changes = changes

    def run(self, argv: Sequence[str], *, timeout: float, text: str | None = None) -> Completed:
        argv = [str(a) for a in argv]
        return self.changes.apply(text or f"run {shlex.join(argv)}", self.runner.run, argv,
                                  timeout=timeout, check=True,
                                  dry_result=Completed(tuple(argv), 0, "", ""))


@dataclass
class Host:
    """The ports of one machine for one run."""

    changes: Changes
    clock: Clock
    runner: Runner  # reads only: --version, probes
    files: Files
    processes: Processes
    commands: Commands
    service: ServicePort
    orthanc: Callable[[], OrthancPort]  # a fresh REST client for the service (reads only)
    databases: Databases  # the index database of a PostgreSQL/MySQL site (dump, clone, ...)
    peer: ServicePort | None = None  # a second service of this host (blue/green's new server)


def make_databases(changes: Changes, runner: Runner) -> Databases:
    """The database port with the PostgreSQL and MySQL/MariaDB command-line clients."""
    return Databases(changes, (PostgreSQLClient(runner), MySQLClient(runner)))


def make_host(*, dry: bool, manager: object, orthanc: Callable[[], OrthancPort],
              runner: Runner | None = None, clock: Clock | None = None,
              hidden_env: Sequence[str] = (), peer: object | None = None,
              http_ports: tuple[int | None, int | None] = (None, None)) -> Host:
    """Assemble a real (dry=False) or dry host around a service manager and a REST factory
    (`peer`: the manager of a second service of this host, if the plan needs one;
    `http_ports`: the two services' Orthanc HTTP ports, poked while they stop)."""
    changes = Changes(dry=dry)
    runner = runner or RealRunner()
    clock = clock or RealClock()
    return Host(changes=changes, clock=clock, runner=runner, files=Files(changes),
                processes=Processes(changes, clock, hidden_env=hidden_env),
                commands=Commands(runner, changes),
                service=ServicePort(manager, changes, http_port=http_ports[0]),
                orthanc=orthanc, databases=make_databases(changes, runner),
                peer=ServicePort(peer, changes, http_port=http_ports[1])
                if peer is not None else None)
