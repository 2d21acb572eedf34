"""relocate after staging, against a real Orthanc 1.10.1: what arrives and what is deleted
between the staging (service running) and the stop ends up exactly mirrored in the new
folder, from the stopped index's own list of attachments."""

from __future__ import annotations

import json
import os

import pytest
import requests

from orchestrator import runs
from orchestrator.errors import ExitCode
from orchestrator.orthanc.index import attachment_paths
from orchestrator.plan import load_plan
from tests.harness.dicom import make_dataset
from tests.harness.world import UPGRADE_STEPS

pytestmark = pytest.mark.orthanc

STEPS = UPGRADE_STEPS


def _files(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root)
            for f in names if not (d == str(root) and f.startswith("index"))}


def test_files_added_and_deleted_between_staging_and_stop_are_mirrored(world_factory):
    data = make_dataset(8, per_series=2, rows=16, cols=16)
    w = world_factory().start()
    w.upload(data[:6])
    to = w.db.parent / "db-v7"
    plan = load_plan(w.plan(STEPS.format(to=json.dumps(str(to)))))
    doomed = w.get("/instances")[:2]
    changed = []

    def observe(event, **data_):
        if event == "step-finished" and data_.get("step") == "relocate-stage":
            assert len(_files(to)) == 6  # staged: every attachment linked, service running
            w.upload(data[6:])  # two arrive after the staging ...
            for iid in doomed:  # ... and two are deleted, before the stop
                requests.delete(f"{w.url}/instances/{iid}", auth=w.auth,
                                timeout=10).raise_for_status()
            changed.append(True)

    report = runs.run(plan, observe=observe)
    assert report.exit_code == ExitCode.OK, report.error
    assert changed and w.counts()["CountInstances"] == 6
    new, old = _files(to), _files(w.db)
    w.stop()
    listed = attachment_paths(to)  # the upgraded index, read once the service stopped
    assert listed is not None and len(listed) == 6
    assert new == old == listed  # exactly the attachments the index lists, no more
    assert all(os.path.samefile(to / r, w.db / r) for r in new)
    rec = [json.loads(line) for line in (w.state / "orthanc-e2e.journal").read_text().splitlines()]
    done = {r["step"]: r["facts"] for r in rec if r.get("event") == "step-done"}
    assert (done["relocate"]["linked"], done["relocate"]["unlinked"]) == (2, 2)
    # The index copy was checked against the snapshot's reading of the same stopped file.
    assert done["relocate"]["index_sha256"] == done["snapshot"]["sha256"]
