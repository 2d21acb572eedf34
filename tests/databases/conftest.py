"""Fixtures for the real database tests: one PostgreSQL 15 and one MariaDB per session.

Each test makes its own "site" (a role-owned database plus a real Orthanc 1.10.1
with Debian's index plugin on it, filled with a few instances), so tests do not
depend on each other's order. Every Orthanc is stopped by PID at teardown; the
servers are stopped by PID and their folders removed at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.host.changes import Changes
from orchestrator.host.host import make_databases
from orchestrator.host.databases import Connection, Databases
from orchestrator.host.runner import RealRunner
from orchestrator.orthanc.backends import DatabaseSection, index_database
from orchestrator.orthanc.config import load_config
from tests.harness.databases import (
    MYSQL_PLUGIN, PG_PLUGIN, MariaDBServer, PostgresServer, mariadb_missing, postgresql_missing)
from tests.harness.dicom import make_dataset
from tests.harness.orthanc import ORTHANC_BINARY, OrthancServer

PASSWORD = "orthanc-pw"


@pytest.fixture(scope="session")
def postgres():
    reason = postgresql_missing() or (None if os.path.exists(ORTHANC_BINARY) else "no Orthanc")
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        server.add_role("orthanc", PASSWORD)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb():
    reason = mariadb_missing() or (None if os.path.exists(ORTHANC_BINARY) else "no Orthanc")
    if reason:
        pytest.skip(reason)
    server = MariaDBServer()
    try:
        server.start()
        server.add_user("orthanc", PASSWORD)
        yield server
    finally:
        server.stop()


@dataclass
class Site:
    """A database with an Orthanc on it: the config, its section, the port."""

    orthanc: OrthancServer
    section: DatabaseSection
    databases: Databases

    @property
    def conn(self) -> Connection:
        return self.section.connection()


@pytest.fixture
def site_factory():
    """make(engine_server, name, instances=6) -> a running Site; everything stopped at teardown."""
    servers: list[OrthancServer] = []
    roots: list[Path] = []

    def orthanc_on(db_server, database: str, *, storage: Path | None = None,
                   section: dict | None = None, start: bool = True) -> OrthancServer:
        root = Path(tempfile.mkdtemp(prefix="orch-db-site-"))
        roots.append(root)
        key = "PostgreSQL" if isinstance(db_server, PostgresServer) else "MySQL"
        plugin = PG_PLUGIN if key == "PostgreSQL" else MYSQL_PLUGIN
        overrides = {"Plugins": [str(plugin)],
                     key: section or db_server.section(database, "orthanc", PASSWORD)}
        if storage is not None:
            overrides.update(StorageDirectory=str(storage), IndexDirectory=str(storage))
        server = OrthancServer(root, config_overrides=overrides)
        servers.append(server)
        if start:
            server.start(timeout=60)
        else:
            server.write_config()
        return server

    def make(db_server, name: str, instances: int = 6, seed: str = "site") -> Site:
        if isinstance(db_server, PostgresServer):
            db_server.sql(f'CREATE DATABASE "{name}" OWNER orthanc;')
        else:
            db_server.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 "
                          "COLLATE utf8mb4_unicode_ci;")
        server = orthanc_on(db_server, name)
        server.upload(make_dataset(instances, per_series=3, rows=16, cols=16, seed=seed))
        section = index_database(load_config(server.config_path))
        assert section is not None
        return Site(server, section, make_databases(Changes(), RealRunner()))

    make.orthanc_on = orthanc_on
    yield make
    for s in servers:
        s.stop()
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)


def counts(server: OrthancServer) -> dict[str, int]:
    stats = server.statistics()
    return {"patients": stats["CountPatients"], "studies": stats["CountStudies"],
            "series": stats["CountSeries"], "instances": stats["CountInstances"]}


def store_one(server: OrthancServer, seed: str) -> dict:
    """POST one new instance; return Orthanc's answer (raises on HTTP errors)."""
    import requests
    data = make_dataset(1, per_series=1, rows=8, cols=8, seed=seed)[0]
    r = requests.post(f"{server.url}/instances", data=data, timeout=30)
    r.raise_for_status()
    return r.json()


def config_json(server: OrthancServer) -> dict:
    return json.loads(server.config_path.read_text())
