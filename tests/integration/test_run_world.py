"""The World harness (tests/harness/world.py): a throwaway installation found by its config."""

import pytest

pytestmark = pytest.mark.orthanc


def test_world_starts_and_is_found_by_its_config(world_factory):
    w = world_factory().start()
    assert w.get("/system")["DatabaseVersion"] == 6
    assert len(w.processes()) == 1
    w.stop()
    assert w.processes() == []
