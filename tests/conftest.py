"""Shared fixtures: real Orthanc servers (stopped by PID in teardown) and synthetic DICOM."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.harness.dicom import make_dataset
from tests.harness.orthanc import ORTHANC_BINARY, OrthancServer
from tests.harness.world import World


def _require_orthanc() -> None:
    if not os.path.exists(ORTHANC_BINARY):
        pytest.skip(f"{ORTHANC_BINARY} is not installed (apt-get install orthanc)")


@pytest.fixture(scope="session")
def small_dataset() -> list[bytes]:
    """24 instances: 2 patients x 2 studies x 2 series x 3 instances, 64x64 pixels."""
    return make_dataset(24, per_series=3, rows=64, cols=64)


@pytest.fixture
def orthanc_factory(tmp_path_factory):
    """Make throwaway Orthanc servers; every one still running is stopped at teardown."""
    _require_orthanc()
    servers: list[OrthancServer] = []
    roots: list[Path] = []

    def make(start: bool = True, **kw) -> OrthancServer:
        root = tmp_path_factory.mktemp("orthanc")
        roots.append(root)
        server = OrthancServer(root, **kw)
        servers.append(server)
        if start:
            server.start()
        else:
            server.write_config()
        return server

    yield make
    for s in servers:
        s.stop()
    for r in roots:
        shutil.rmtree(r, ignore_errors=True)


@pytest.fixture(scope="module")
def module_orthanc(tmp_path_factory, small_dataset):
    """One running Orthanc per test module, loaded with `small_dataset`."""
    _require_orthanc()
    root = tmp_path_factory.mktemp("orthanc-mod")
    server = OrthancServer(root)
    server.start()
    server.upload(small_dataset)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def world_factory(tmp_path):
    """Make Worlds (tests/harness/world.py); every process of their configs is killed at teardown."""
    _require_orthanc()
    made: list[World] = []

    def make(name: str = "w", **kw) -> World:
        w = World(tmp_path / name, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill_all()
