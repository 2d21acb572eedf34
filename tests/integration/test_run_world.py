"""The World harness (tests/harness/world.py) and its fixture for end-to-end CLI tests."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.harness.orthanc import ORTHANC_BINARY
from tests.harness.world import REPO, World, sha256, tree_digest  # noqa: F401  (re-exported)

pytestmark = pytest.mark.orthanc


@pytest.fixture
def world_factory(tmp_path):
    """Make Worlds; every process of their configs is killed at teardown."""
    if not os.path.exists(ORTHANC_BINARY):
        pytest.skip(f"{ORTHANC_BINARY} is not installed")
    made: list[World] = []

    def make(name: str = "w", **kw: Any) -> World:
        w = World(tmp_path / name, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.kill_all()


def test_world_starts_and_is_found_by_its_config(world_factory):
    w = world_factory().start()
    assert w.get("/system")["DatabaseVersion"] == 6
    assert len(w.processes()) == 1
    w.stop()
    assert w.processes() == []
