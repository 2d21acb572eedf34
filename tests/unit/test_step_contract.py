"""The typed step contract: one table, option defaults that match the schema, and step data
that round-trips through a real journal file, old (main's format) and new alike."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from orchestrator.journal import Event, Journal, StepState
from orchestrator.steps import STEPS, from_journal
from orchestrator.steps.base import StepFacts, StepIntent, StepOptions
from orchestrator.steps.command import CommandFacts, CommandIntent
from orchestrator.steps.health import HealthFacts
from orchestrator.steps.healthy import Answer
from orchestrator.steps.kind import StepKind
from orchestrator.steps.package import PackageFacts, PackageIntent, StageFacts as PackageStaged
from orchestrator.steps.package import StageIntent as PackageStage
from orchestrator.steps.preflight import FreeSpace, HazardFact, PreflightFacts
from orchestrator.steps.record import RecordError
from orchestrator.steps.relocate import (Edit, RelocateFacts, RelocateIntent, Rewritten,
                                         StageFacts, StageIntent as LinksIntent)
from orchestrator.steps.service import StartFacts, StopFacts, StopIntent
from orchestrator.steps.database import DumpTaken, Fingerprint
from orchestrator.steps.snapshot import SnapshotFacts, SnapshotIntent, StageIntent
from orchestrator.steps.snapshot import StageFacts as StageDumpFacts
from orchestrator.steps.upgrade import UpgradeFacts, UpgradeIntent, UpgradeProgress
from orchestrator.orthanc.hazards import Severity
from orchestrator.steps.bluegreen.catch_up import CatchUpFacts
from orchestrator.steps.bluegreen.copy import ReplicateFacts, ReplicateIntent
from orchestrator.steps.bluegreen.freeze import FreezeFacts
from orchestrator.steps.bluegreen.switch import SwitchFacts, SwitchIntent
from orchestrator.steps.bluegreen.verify_copy import VerifyCopyFacts

SCHEMA = Path(__file__).resolve().parents[2] / "orchestrator" / "data" / "plan.schema.json"
OLD_JOURNAL = Path(__file__).resolve().parents[1] / "data" / "journals" / "main-relocate-upgrade.journal"
P = Path("/var/lib/orthanc/db-v7")

# One sample intent and facts per kind, with every optional field set.
SAMPLES: dict[StepKind, tuple[StepIntent, StepFacts]] = {
    StepKind.PREFLIGHT: (StepIntent(), PreflightFacts(
        binary=Path("/usr/sbin/Orthanc"), binary_version="1.12.8", expected_schema=6,
        config_files=(Path("/etc/orthanc/orthanc.json"),), backend="sqlite", storage_dir=P,
        index_dir=P, upgrade_source=P, schema_version=6, index={"exists": True},
        counts={"patients": 1}, counts_from="rest", service={"state": "running"},
        running_version="1.10.1", running_database_version=6,
        hazards=(HazardFact(code="x", severity=Severity.WARNING, message="m", hint="h"),),
        free={str(P): FreeSpace(free=10, need=5, purpose="the relocated index")},
        expects_version="1.12.8", binary_may_change=True, summary="s", warnings=("w",))),
    StepKind.STOP_SERVICE: (StopIntent(was_running=True, main_pid=4, pid_started=1.5,
                                       manager="systemd"),
                            StopFacts(stopped_at=2.5, notes=("systemd killed it",), summary="s")),
    StepKind.SNAPSHOT: (SnapshotIntent(dir=P, index_dir=P, files=("index",), storage_dir=P,
                                       link_attachments=True),
                        SnapshotFacts(sha256={"index": "ab"}, attachments=3, summary="s")),
    StepKind.STAGE_SNAPSHOT: (StageIntent(dir=P, index_dir=P, created=True), StageDumpFacts(
        summary="s", dump=DumpTaken(path=P, sha256="ab", size=3,
                                    fingerprint=Fingerprint(writes=7, counts={"instances": 1})))),
    StepKind.STAGE_LINKS: (LinksIntent(to=P, storage=P.parent, index_dir=P.parent, created=True),
                           StageFacts(linked=4)),
    StepKind.RELOCATE: (RelocateIntent(to=P, storage=P.parent, index_dir=P.parent,
                                       index_files=("index", "index-wal"), created=False,
                                       edits=(Edit(file=Path("/etc/o.json"), keys=("A", "B"),
                                                   backup=Path("/b/0-o.json")),)),
                        RelocateFacts(index_sha256={"index": "ab"}, linked=1, unlinked=2,
                                      configs=(Rewritten(file=Path("/etc/o.json"), before="a",
                                                         after="b"),))),
    StepKind.STAGE_PACKAGE: (PackageStage(specs=("orthanc=1.12.7+dfsg-4",), release="trixie"),
                             PackageStaged(moves=("orthanc 1 -> 2",), rollback_debs=(P,),
                                           preinstalled=("libx=2",))),
    StepKind.PACKAGE: (PackageIntent(names=("orthanc",), specs=("orthanc=2",), release="trixie",
                                     old_release="bookworm", before={"orthanc": "1"},
                                     config_copy=P, log=P, policy="ZXhpdCAxMDEK", index_dir=P,
                                     schema_before={"table A": "CREATE TABLE A(x)"}, unit="orthanc"),
                       PackageFacts(installed={"orthanc": "2"}, summary="s")),
    StepKind.UPGRADE: (UpgradeIntent(argv=("/usr/sbin/Orthanc", "--upgrade", "/etc/o.json"),
                                     index_dir=P, log=Path("/l/upgrade.log"),
                                     extra_logs=(Path("/var/log/u.log"),), user="orthanc", cwd="/"),
                       UpgradeFacts(watch={"ended": "exited"}, verdict={"outcome": "upgraded"},
                                    schema_after=6, counts_after={"patients": 1})),
    StepKind.START_SERVICE: (StepIntent(), StartFacts(main_pid=9, notes=("reset failed",))),
    StepKind.HEALTH_CHECK: (StepIntent(), HealthFacts(
        health=Answer(pid=9, version="1.12.8", database_version=6, waited=0.5),
        counts={"patients": 1})),
    StepKind.COMMAND: (CommandIntent(argv=("/bin/true", "a b"), undo=("/bin/false",)),
                       CommandFacts(returncode=0, tail="ok")),
    StepKind.REPLICATE: (ReplicateIntent(source="http://a:8042", target="http://b:8042",
                                         start_seq=7, target_extra=("x",)),
                         ReplicateFacts(copied=3, present=1, failed=1, cursor=9, seconds=0.5)),
    StepKind.CATCH_UP: (StepIntent(), CatchUpFacts(passes=2, copied=3, failed=0, cursor=12,
                                                   md5_checked=4, md5_different=0)),
    StepKind.FREEZE: (StepIntent(), FreezeFacts(frozen_at=1.5e9, action_s=0.2, copied=2,
                                                failed=0, by="rest", seconds=0.7)),
    StepKind.VERIFY_COPY: (StepIntent(), VerifyCopyFacts(comparison={"ok": True},
                                                         deleted_on_old=1, deletions_applied=1)),
    StepKind.SWITCH: (SwitchIntent(target_seq=5), SwitchFacts(switched_at=1.5e9,
                                                              write_freeze_s=1.25)),
}
# Kinds newer than the journals main wrote (tests/data/journals): not in those fixtures.
BLUE_GREEN = {StepKind.REPLICATE, StepKind.CATCH_UP, StepKind.FREEZE, StepKind.VERIFY_COPY,
              StepKind.SWITCH}


def test_one_table_names_every_kind_and_each_class_its_records():
    assert set(STEPS) == set(StepKind) == set(SAMPLES)
    for kind, cls in STEPS.items():
        assert cls.kind == kind
        intent, facts = SAMPLES[kind]
        assert isinstance(intent, cls.Intent) and isinstance(facts, cls.Facts), kind
        for record in (cls.Options, cls.Intent, cls.Facts):
            assert dataclasses.is_dataclass(record) and record.__dataclass_params__.frozen


def _schema_node(schema: dict, node: dict) -> dict:
    while "$ref" in node and "properties" not in node:
        node = {**schema["$defs"][node["$ref"].split("/")[-1]],
                **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _compare(schema: dict, node: dict, record: type, where: str) -> list[str]:
    """Differences between a schema object's properties/defaults and a record's fields."""
    node = _schema_node(schema, node)
    props = node.get("properties", {})
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(record)}
    wrong = [f"{where}: {k} only in the schema" for k in props if k not in fields]
    wrong += [f"{where}: {k} only in {record.__name__}" for k in fields if k not in props]
    for key in set(props) & set(fields):
        f, sub = fields[key], _schema_node(schema, props[key])
        if f.default is not dataclasses.MISSING:
            ours = f.default
        elif f.default_factory is not dataclasses.MISSING:
            ours = f.default_factory()
        else:
            ours = dataclasses.MISSING
        if dataclasses.is_dataclass(ours):
            wrong += _compare(schema, props[key], type(ours), f"{where}.{key}")
            ours = ours.to_json() if "default" in sub else dataclasses.MISSING
            theirs = sub.get("default", dataclasses.MISSING)
            if theirs is not dataclasses.MISSING and ours != theirs and theirs != {}:
                wrong.append(f"{where}.{key}: default {theirs!r} in the schema, {ours!r} here")
            continue
        theirs = sub.get("default", None if key not in node.get("required", []) else dataclasses.MISSING)
        if isinstance(ours, tuple):
            ours = list(ours)
        if ours != theirs:
            wrong.append(f"{where}.{key}: default {theirs!r} in the schema, {ours!r} here")
    return wrong


def test_option_defaults_live_in_the_options_and_match_the_schema():
    schema = json.loads(SCHEMA.read_text())
    wrong = []
    for kind, cls in STEPS.items():
        if kind.value in schema["$defs"]:
            wrong += _compare(schema, schema["$defs"][kind.value], cls.Options, kind.value)
        else:  # a stage step: the options of the step it stages
            assert any(other.staged_by == kind and other.Options is cls.Options
                       for other in STEPS.values()), kind
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("kind", list(StepKind), ids=str)
def test_every_kind_round_trips_its_intent_and_facts_through_a_journal_file(tmp_path, kind):
    intent, facts = SAMPLES[kind]
    cls = STEPS[kind]
    given = {StepKind.COMMAND: {"argv": ["/bin/true"]}, StepKind.RELOCATE: {"to": str(P), "from": "/o"},
             StepKind.STAGE_LINKS: {"to": str(P)},
             StepKind.REPLICATE: {"to": "http://127.0.0.1:8043"},
             StepKind.PACKAGE: {"version": "2"}, StepKind.STAGE_PACKAGE: {"version": "2"}}
    options = cls.Options.from_json(given.get(kind, {}))
    j = Journal(tmp_path / "svc.journal")
    j.append(Event.RUN_STARTED, run_id="r", mode="run", plan="p", plan_sha256="", service="svc",
             pid=1, host="h", steps=[{"id": "s", "kind": kind.value, "options": options.to_json()}])
    j.append(Event.STEP_STARTED, step="s", intent=intent.to_json())
    j.append(Event.STEP_DONE, step="s", facts=facts.to_json(), changes=[])
    history = j.last_run()
    [step] = from_journal(history.specs)
    rec = history.steps["s"]
    assert rec.state == StepState.DONE and step.kind == kind and step.options == options
    assert step.intent_of(rec) == (intent if intent.to_json() else None)
    assert step.facts_of(rec) == facts


def test_a_journal_written_by_main_still_loads_into_typed_records(tmp_path):
    path = tmp_path / "orthanc.journal"
    shutil.copy(OLD_JOURNAL, path)
    history = Journal(path).last_run()
    steps = from_journal(history.specs)
    assert [s.kind for s in steps][-3:] == [StepKind.UPGRADE, StepKind.START_SERVICE,
                                            StepKind.HEALTH_CHECK]
    by_id = {s.id: s for s in steps}
    relocate = by_id["relocate"]
    assert relocate.options.to == P and relocate.options.source == Path("/var/lib/orthanc/db-v6")
    assert relocate.intent_of(history.steps["relocate"]).edits[0].file == Path("/etc/orthanc/orthanc.json")
    assert by_id["health-check"].options.expect.version == "1.12.8"
    for step in steps:
        rec = history.steps[step.id]
        step.intent_of(rec), step.facts_of(rec)  # every record reads
    progress = by_id["upgrade"].progress_of(history.steps["upgrade"])
    assert (progress.pid, progress.create_time) == (5120, 1764316803.35)
    pre = by_id["preflight"].facts_of(history.steps["preflight"])
    assert pre.free[str(P)].purpose == "the relocated index" and pre.counts["instances"] == 9


def test_a_journal_this_version_cannot_read_is_refused_with_the_key_named(tmp_path):
    lines = OLD_JOURNAL.read_text().splitlines()
    lines[5] = lines[5].replace('"main_pid": 812', '"main_pid": "812"')  # stop-service's intent
    path = tmp_path / "orthanc.journal"
    path.write_text("\n".join(lines) + "\n")
    history = Journal(path).last_run()
    stop = {s.id: s for s in from_journal(history.specs)}["stop-service"]
    with pytest.raises(RecordError, match=r"journal: step stop-service: intent.main_pid: "
                                          r"expected an integer") as err:
        stop.intent_of(history.steps["stop-service"])
    assert "another version" in err.value.hint
    specs = [dict(s) for s in history.specs]
    specs[0] = {"id": "x", "kind": "teleport", "options": {}}
    with pytest.raises(RecordError, match="unknown kind 'teleport'"):
        from_journal(specs)
    specs[0] = {"id": "preflight", "kind": "preflight", "options": {"min_free": 3}}
    with pytest.raises(RecordError, match="journal: step preflight: options: unknown key 'min_free'"):
        from_journal(specs)


def test_options_are_frozen_and_typed_end_to_end():
    opts = STEPS[StepKind.RELOCATE].Options.from_json({"to": "/a/b", "config_file": "/c.json"})
    assert isinstance(opts.to, Path) and isinstance(opts.config_file, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.to = Path("/x")  # type: ignore[misc]
    assert STEPS[StepKind.STOP_SERVICE].Options().timeout == 120.0
    assert isinstance(StepOptions(), StepOptions)


# (record type, JSON in, the error's text) -- the codec refuses instead of guessing
BAD = [
    (STEPS[StepKind.STOP_SERVICE].Intent, {"was_running": 1, "manager": "m"},
     "intent.was_running: expected true or false, got 1"),
    (STEPS[StepKind.STOP_SERVICE].Intent, {"was_running": True, "main_pid": True, "manager": "m"},
     "intent.main_pid: expected an integer, got True"),
    (STEPS[StepKind.STOP_SERVICE].Intent, {"was_running": True}, "intent: missing key 'manager'"),
    (STEPS[StepKind.RELOCATE].Options, {"to": ""}, "options.to: expected a path"),
    (STEPS[StepKind.COMMAND].Intent, {"argv": "/bin/true"}, "intent.argv: expected a list"),
    (STEPS[StepKind.PREFLIGHT].Facts, {**SAMPLES[StepKind.PREFLIGHT][1].to_json(),
                                       "hazards": [{"code": "x", "severity": "fatal",
                                                    "message": "m", "hint": "h"}]},
     "facts.hazards[0].severity: 'fatal' is not one of"),
]


@pytest.mark.parametrize("record,data,message", BAD, ids=[b[2].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_the_codec_names_the_key_it_cannot_read(record, data, message):
    with pytest.raises(RecordError) as err:
        record.from_json(data)
    assert message in err.value.message


def test_to_json_leaves_out_empty_defaults_and_keeps_false_and_zero():
    facts = STEPS[StepKind.COMMAND].Facts(returncode=0)
    assert facts.to_json() == {"returncode": 0}
    intent = STEPS[StepKind.STOP_SERVICE].Intent(was_running=False, manager="process")
    assert intent.to_json() == {"was_running": False, "manager": "process"}


REAL = sorted((OLD_JOURNAL.parent).glob("main-run-*.journal"))  # written by main's `run` (d1bb08b)


@pytest.mark.parametrize("fixture", REAL, ids=lambda p: p.stem)
def test_journals_written_by_main_on_a_real_orthanc_read_into_typed_records(tmp_path, fixture):
    path = tmp_path / "orthanc-e2e.journal"
    shutil.copy(fixture, path)
    history = Journal(path).last_run()
    steps = from_journal(history.specs)
    # every kind, stage steps included, but those written after main's journals were recorded
    assert {s.kind for s in steps} == set(StepKind) - BLUE_GREEN - {StepKind.PACKAGE,
                                                                     StepKind.STAGE_PACKAGE}
    for step in steps:
        rec = history.steps[step.id]
        intent, facts = step.intent_of(rec), step.facts_of(rec)
        if rec.state == StepState.DONE:
            assert facts is not None and (intent is not None or not rec.intent)
    upgrade = next(s for s in steps if s.kind == StepKind.UPGRADE)
    progress = upgrade.progress_of(history.steps[upgrade.id])
    assert progress.pid and progress.create_time
    relocate = next(s for s in steps if s.kind == StepKind.RELOCATE)
    assert relocate.intent_of(history.steps[relocate.id]).to == relocate.options.to
    if "crashed" in fixture.stem:
        assert history.open and history.steps[upgrade.id].state == StepState.STARTED
