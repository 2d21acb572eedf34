"""relocate.to is judged on real paths (issue 12): through a symlinked storage folder or a `..`
it must not land inside, on, or above the folder that is the rollback point; nor may the state
folder live inside the storage. Each is refused before anything changes (exit 2)."""

from __future__ import annotations

import json
import os

import pytest

from tests.harness.world import tree_digest

pytestmark = pytest.mark.orthanc

STEPS = """  - preflight
  - stop-service: {{timeout: 60}}
  - relocate: {{to: {to}}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60}}
"""


def test_relocate_targets_that_escape_through_links_or_dotdot_are_refused(world_factory):
    w = world_factory("paths")
    w.start()
    link = w.root / "storage-link"
    os.symlink(w.db, link)
    before = tree_digest(w.db)
    config = w.config.read_bytes()
    for to in (link / "next",                              # inside, through a symlink
               w.db / ".." / w.db.name / "next",             # inside, through `..`
               link,                                         # the same folder
               w.db.parent / "x" / ".." / ".."):            # a parent of it
        plan = w.plan(STEPS.format(to=json.dumps(str(to))), name="escape.yaml")
        rc, doc, err = w.cli("run", str(plan))
        assert rc == 2, (to, doc, err)
        assert "relocate.to" in doc["error"] and "current folder" in doc["error"], doc
        assert "Traceback" not in err
        assert tree_digest(w.db) == before and w.config.read_bytes() == config
        assert not (w.db / "next").exists()
    w.wait_up(30)  # never stopped


def test_a_state_folder_inside_the_storage_is_refused(world_factory):
    w = world_factory("state-inside")
    w.start()
    plan = w.plan(STEPS.format(to=json.dumps(str(w.db.parent / "db-next"))), name="state.yaml")
    text = plan.read_text().replace(f"state_dir: {json.dumps(str(w.state))}",
                                    f"state_dir: {json.dumps(str(w.db / 'orchestrator-state'))}")
    plan.write_text(text)
    rc, doc, err = w.cli("run", str(plan))
    assert rc == 2, (doc, err)
    assert "inside the storage folder" in doc["error"], doc
    assert not (w.db.parent / "db-next").exists()
