"""Every command's `--json` document, printed for real against Orthanc 1.10.1, is valid against
the one shipped output schema (orchestrator/data/output.schema.json, docs/json.md).

Each command runs as `python -m orchestrator ... --json` in a subprocess; the document is
checked against the schema's root (one of the document kinds) and against the kind that
command must print, so a document that drifts into another kind's shape is caught too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from importlib import resources

import pytest
from jsonschema import Draft202012Validator

from tests.harness.dicom import make_dataset
from tests.harness.world import REPO

SCHEMA = json.loads(resources.files("orchestrator").joinpath("data/output.schema.json")
                    .read_text(encoding="utf-8"))
KINDS = ("error", "run_report", "nothing_to_do", "status", "inspect", "validate", "transfer")

STEPS = """  - preflight
  - stop-service: {timeout: 60}
  - start-service: {timeout: 60}
  - health-check: {timeout: 60}
"""
# The same run, made to fail after the restart: the health check expects another schema.
FAILING = STEPS.replace("health-check: {timeout: 60}",
                        "health-check: {timeout: 60, expect: {database_version: 99}}")


def check(doc: object, kind: str) -> dict:
    """Assert `doc` is valid against the schema's root and is of `kind`; return it."""
    assert isinstance(doc, dict), doc
    errors = [e.message for e in _validator(None).iter_errors(doc)]
    assert not errors, (errors, doc)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator(kind).iter_errors(doc)]
    assert not errors, (kind, errors, doc)
    return doc


def _validator(kind: str | None) -> Draft202012Validator:
    schema = SCHEMA if kind is None else {**SCHEMA, "oneOf": [{"$ref": f"#/$defs/{kind}"}]}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _iso(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0, text
    return stamp


@pytest.fixture(scope="module")
def data():
    return make_dataset(2, per_series=2, rows=16, cols=16)


def test_the_schema_is_valid_2020_12_and_ships_as_package_data():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert [one["$ref"] for one in SCHEMA["oneOf"]] == [f"#/$defs/{k}" for k in KINDS]
    for kind in KINDS:
        body = SCHEMA["$defs"][kind]
        assert {"ok", "exit_code"} <= set(body["required"]), kind
        assert body["additionalProperties"] is False and body["description"], kind
        assert all("description" in p or "$ref" in p for p in body["properties"].values()), kind
    # A drifted document is caught: an unknown key, and a time in the wrong form.
    bad = {"ok": True, "exit_code": 0, "command": "status", "journal": "/j", "running": None,
           "run": None, "extra": 1}
    assert not _validator("status").is_valid(bad)
    owner = {"pid": 1, "host": "h", "started": 1764323952.5, "command": "run", "service": "s",
             "state_dir": "/s", "key": ""}
    good = {k: v for k, v in bad.items() if k != "extra"}
    assert _validator("status").is_valid(good)
    assert not _validator("status").is_valid({**good, "running": owner})  # epoch, not ISO
    owner["started"] = "2026-11-28T09:59:12.500Z"
    assert _validator("status").is_valid({**good, "running": owner})

def test_the_schemas_closed_sets_are_the_codes_enums():
    from orchestrator.errors import ExitCode
    from orchestrator.journal import RunOutcome, StepState
    from orchestrator.orthanc.hazards import Severity
    from orchestrator.replication.outcome import CopyOutcome
    from orchestrator.run_report import Outcome, StepStatus

    d = SCHEMA["$defs"]
    assert set(d["exit_code"]["enum"]) == {int(c) for c in ExitCode}
    assert set(d["run_report"]["properties"]["outcome"]["enum"]) == {o.value for o in Outcome}
    assert set(d["run_step"]["properties"]["status"]["enum"]) == {s.value for s in StepStatus}
    assert set(d["journal_step"]["properties"]["state"]["enum"]) == {s.value for s in StepState}
    assert set(d["journal_run"]["properties"]["outcome"]["enum"]) == \
        {o.value for o in RunOutcome} | {None}
    assert set(d["hazard"]["properties"]["severity"]["enum"]) == {s.value for s in Severity}
    assert set(d["transfer"]["properties"]["counts"]["required"]) == {o.key for o in CopyOutcome}


def test_schema_output_prints_the_shipped_schema():
    done = subprocess.run([sys.executable, "-m", "orchestrator", "schema", "--output"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == SCHEMA


# A command whose body raises, run through the real entry point: only the command is swapped.
RAISING = """import sys
import orchestrator.cli as cli
import orchestrator.cli.plan_cmds as cmds
def boom(**kwargs):
    raise {exc}("a bug")
cmds.schema.callback = boom
cli.main(["schema", "--json"])
"""


@pytest.mark.parametrize("exc, code", [("RuntimeError", 70), ("KeyboardInterrupt", 130)])
def test_a_bug_or_an_interrupt_still_prints_one_error_document(exc, code):
    done = subprocess.run([sys.executable, "-c", RAISING.format(exc=exc)], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == code, done.stderr
    assert check(json.loads(done.stdout), "error")["exit_code"] == code


def test_status_of_a_crashed_run_and_of_a_run_in_progress(tmp_path):
    """An open journal (exit 5), then the same run with a live lock holder (`running`)."""
    from orchestrator.journal import Event, Journal
    from orchestrator.lock import LockOwner
    from orchestrator.runs import RunStatus

    journal = Journal.for_service(tmp_path, "orch-json")
    journal.append(Event.RUN_STARTED, run_id="r1", mode="run", plan="p.yaml", service="orch-json",
                   pid=1, host="h", steps=[{"id": "stop-service", "kind": "stop-service"}])
    journal.append(Event.STEP_STARTED, step="stop-service", intent={})
    done = subprocess.run([sys.executable, "-m", "orchestrator", "status", "--state-dir",
                           str(tmp_path), "--json"], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 5, done.stderr
    doc = check(json.loads(done.stdout), "status")
    step = doc["run"]["steps"][0]
    assert not doc["ok"] and doc["run"]["open"] and doc["run"]["finished"] is None
    assert step["state"] == "started" and step["finished"] is None and step["seconds"] is None
    owner = LockOwner(pid=2, host="h", started=1764323952.5, command="rollback",
                      service="orch-json", state_dir=str(tmp_path))
    doc = check(RunStatus(journal.path, journal.last_run(), owner).to_dict(), "status")
    assert doc["exit_code"] == 0 and doc["running"]["started"] == "2025-11-28T09:59:12.500Z"


@pytest.mark.orthanc
def test_validate_plan_run_status_rollback_inspect_and_errors(world_factory, data, tmp_path):
    w = world_factory().start()
    w.upload(data)
    plan = w.plan(STEPS)

    rc, doc, err = w.cli("validate", str(plan))
    assert rc == 0, err
    ids = [s["id"] for s in check(doc, "validate")["steps"]]
    assert ids == ["preflight", "stop-service", "start-service", "health-check"]

    rc, doc, err = w.cli("plan", str(plan))
    assert rc == 0, err
    assert check(doc, "run_report")["command"] == "plan" and doc["outcome"] == "planned"
    assert [s["id"] for s in doc["steps"]] == ids

    rc, doc, err = w.cli("run", str(plan))
    assert rc == 0, (doc, err)
    assert check(doc, "run_report")["outcome"] == "done" and doc["downtime"] is not None
    assert [s["id"] for s in doc["steps"]] == ids

    rc, doc, err = w.cli("status", str(plan))
    assert rc == 0, err
    run = check(doc, "status")["run"]
    assert [s["id"] for s in run["steps"]] == ids and run["outcome"] == "done"
    begun = _iso(run["started"])
    for step in run["steps"]:  # absolute times as ISO UTC; offsets as in a run report
        assert _iso(step["started"]) >= begun and step["start"] >= 0 and step["seconds"] >= 0

    rc, doc, err = w.cli("rollback", str(plan))
    assert rc == 0, err
    assert check(doc, "nothing_to_do")["command"] == "rollback"

    rc, doc, err = w.cli("resume", str(plan))
    assert rc == 0, err
    assert check(doc, "nothing_to_do")["command"] == "resume"

    rc, doc, err = w.cli("revert", str(plan), "--dry-run")
    assert rc == 0, (doc, err)
    assert check(doc, "run_report")["command"] == "revert" and doc["outcome"] == "planned"

    rc, doc, err = w.cli("status", "--state-dir", str(tmp_path / "empty"))
    assert rc == 0, err
    assert check(doc, "status")["run"] is None

    rc, doc, err = w.cli("inspect", str(w.config))
    assert rc == 0, err
    assert check(doc, "inspect")["server"] is not None  # running: facts from REST

    bad = w.root / "bad.yaml"
    bad.write_text(plan.read_text().replace("stop-service: {timeout: 60}",
                                            "stop-service: {timeout: soon}"))
    rc, doc, err = w.cli("validate", str(bad))
    assert rc == 2 and check(doc, "error")["problems"], err
    rc, doc, err = w.cli("plan", str(bad))
    assert rc == 2 and not check(doc, "error")["ok"], err

    rc, doc, err = w.cli("run")  # usage error: no PLAN
    assert rc == 2 and check(doc, "error")["hint"], err
    rc, doc, err = w.cli("inspect", str(w.config), "--no-such-option")
    assert rc == 2 and check(doc, "error")["exit_code"] == 2, err


@pytest.mark.orthanc
def test_a_failing_run_that_rolls_back(world_factory, data):
    w = world_factory().start()
    w.upload(data)
    plan = w.plan(FAILING)
    rc, doc, err = w.cli("run", str(plan))
    assert rc == 3, (doc, err)
    check(doc, "run_report")
    assert doc["outcome"] == "rolled-back" and not doc["ok"] and doc["error"]
    failed = [s for s in doc["steps"] if s["status"] == "failed"]
    assert [s["id"] for s in failed] == ["health-check"] and failed[0]["error"]

    rc, doc, err = w.cli("status", str(plan))
    assert rc == 0, err
    assert check(doc, "status")["run"]["outcome"] == "rolled-back"
    assert {s["state"] for s in doc["run"]["steps"]} >= {"undone"}

    rc, doc, err = w.cli("revert", str(plan), "--dry-run")  # refused: nothing of it is in place
    assert rc == 1 and "rolled-back" in check(doc, "error")["error"], (doc, err)


@pytest.mark.orthanc
def test_replicate_and_import_storage_dry_runs(world_factory, data, tmp_path):
    source = world_factory("source").start()
    target = world_factory("target").start()
    source.upload(data)

    rc, doc, err = source.cli("replicate", source.url, target.url, "--dry-run",
                              "--state-dir", str(tmp_path / "s1"))
    assert rc == 0, (doc, err)
    assert check(doc, "transfer")["command"] == "replicate" and doc["dry_run"]
    assert doc["counts"]["would_copy"] == len(data)

    source.stop()  # import-storage reads a storage no Orthanc is running on
    rc, doc, err = source.cli("import-storage", str(source.db), target.url, "--dry-run",
                              "--state-dir", str(tmp_path / "s2"))
    assert rc == 0, (doc, err)
    assert check(doc, "transfer")["command"] == "import-storage" and doc["dry_run"]
    assert target.counts()["CountInstances"] == 0
