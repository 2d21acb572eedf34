"""Steps on real files in a temp folder, with a fake service: snapshot, relocate, upgrade, command."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import Completed, InputError, StepError
from orchestrator.host.host import make_host
from orchestrator.host.runner import FakeRunner
from orchestrator.journal import StepRecord, StepState
from orchestrator.plan import parse_plan
from orchestrator.services.base import ServiceStatus, State
from orchestrator.steps import build
from orchestrator.steps.base import RunContext

HOSTILE = "db v7 'q' \"dq\"; rm -rf x"

CONFIG = """{
  // the storage: comments and odd spacing must survive a rewrite
  "Name" : "test",
  "StorageDirectory"   :   "%s",   /* trailing comment */
  "IndexDirectory" : "%s",
  "HttpPort": 8999,
  "Plugins": [],
}
"""


@dataclass
class FakeManager:
    kind: str = "process"
    state: State = State.STOPPED

    class target:  # noqa: N801 - mimics ServiceTarget's attribute
        name = "orthanc-test"

    def status(self):
        return ServiceStatus(self.state, 4242 if self.state == State.RUNNING else None)

    def warnings(self):
        return []

    def stop(self, *, timeout):
        self.state = State.STOPPED

    def start(self, *, timeout):
        self.state = State.RUNNING

    def stop_commands(self):
        return [["kill", "-TERM", "4242"]]

    def start_commands(self):
        return [["orthanc", "cfg"]]


def _index(path: Path, version: int = 6, instances: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE GlobalProperties(property INTEGER PRIMARY KEY, value TEXT)")
    con.execute("CREATE TABLE Resources(internalId INTEGER PRIMARY KEY, resourceType INTEGER)")
    con.execute("INSERT INTO GlobalProperties VALUES (1, ?)", (str(version),))
    con.executemany("INSERT INTO Resources(resourceType) VALUES (?)",
                    [(1,), (2,), (3,)] + [(4,)] * instances)
    con.commit()
    con.close()


def _world(tmp_path: Path, steps: str, *, name: str = "db-v6"):
    """A config, a storage folder with an index and 3 attachments, a plan and a context."""
    storage = tmp_path / name
    _index(storage / "index")
    for i, rel in enumerate(("0a/1b/aaaa", "0a/2c/bbbb", "ff/00/cccc")):
        (storage / rel).parent.mkdir(parents=True, exist_ok=True)
        (storage / rel).write_bytes(b"dicom %d" % i)
    cfg = tmp_path / "etc" / "orthanc.json"
    cfg.parent.mkdir()
    cfg.write_text(CONFIG % (storage, storage))
    text = (f"version: 1\nservice:\n  name: orthanc-test\n  manager: process\n"
            f"  binary: /usr/sbin/Orthanc\n  config: {cfg}\nsteps:\n{steps}")
    plan = parse_plan(text, "plan.yaml", base_dir=tmp_path)
    ctx = RunContext(plan, "run-1", tmp_path / "state" / "run-1", {})
    return plan, ctx, storage, cfg


def _step(plan, step_id):
    return next(s for s in build(plan) if s.id == step_id)


def _host(dry=False, manager=None, runner=None):
    return make_host(dry=dry, manager=manager or FakeManager(), orthanc=lambda: None,
                     runner=runner or FakeRunner({}))


def _run(step, host, ctx):
    """Apply and verify one step as the engine does; return its record."""
    rec = ctx.records.setdefault(step.id, StepRecord(step.id, step.kind))
    ctx.steps = ctx.steps or build(ctx.plan)
    step.check(host, ctx)
    intent = step.intend(host, ctx)
    rec.intent, rec.state = intent.to_json(), StepState.STARTED
    facts = step.apply(host, ctx, intent)
    rec.facts = facts.to_json()
    rec.facts = step.verify(host, ctx, intent, facts).to_json()
    rec.state = StepState.DONE
    return rec


def _undo(step, host, ctx):
    rec = ctx.records[step.id]
    rec.state = StepState.UNDOING
    text = step.undo(host, ctx, rec)
    rec.state = StepState.UNDONE
    return text


def _digest_tree(root: Path) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return out


def test_build_inserts_stage_links_before_the_stop_and_names_repeats():
    plan = parse_plan("version: 1\nservice: {name: o, binary: /b, config: /c}\nsteps:\n"
                      "  - preflight\n  - command: {argv: [/bin/true]}\n  - stop-service\n"
                      "  - relocate: {to: /x}\n  - command: {argv: [/bin/true]}\n  - upgrade\n"
                      "  - start-service\n  - health-check\n", "p.yaml")
    assert [s.id for s in build(plan)] == ["preflight", "command-1", "relocate-stage",
                                          "stop-service", "relocate", "command-2", "upgrade",
                                          "start-service", "health-check"]


def test_snapshot_undo_restores_the_index_byte_for_byte_and_drops_a_stale_wal(tmp_path):
    plan, ctx, storage, _ = _world(tmp_path, "  - stop-service\n  - snapshot\n  - upgrade\n"
                                             "  - start-service\n")
    host = _host()
    stage, snap = _step(plan, "snapshot-stage"), _step(plan, "snapshot")
    before = (storage / "index").read_bytes()
    _run(stage, host, ctx)  # the pre-copy, while "the service runs"
    assert (ctx.run_dir / "snapshot" / "index.orchestrator-tmp").exists()
    rec = _run(snap, host, ctx)
    assert set(rec.facts["sha256"]) == {"index"}
    _index(storage / "index2", version=5)  # "the upgrade" rewrites the live index
    os.replace(storage / "index2", storage / "index")
    (storage / "index-wal").write_bytes(b"half a transaction")
    text = _undo(snap, host, ctx)
    assert (storage / "index").read_bytes() == before
    assert not (storage / "index-wal").exists()
    assert "restored" in text


def test_snapshot_undo_when_the_copy_never_finished_touches_nothing(tmp_path):
    plan, ctx, storage, _ = _world(tmp_path, "  - stop-service\n  - snapshot\n  - upgrade\n"
                                             "  - start-service\n")
    snap = _step(plan, "snapshot")
    ctx.records[snap.id] = StepRecord(snap.id, snap.kind, StepState.UNDOING,
                                      intent={"dir": str(tmp_path / "s"), "index_dir": str(storage),
                                              "files": ["index"], "storage_dir": str(storage),
                                              "link_attachments": False})
    (storage / "index-wal").write_bytes(b"wal of the running service")
    assert "never touched" in snap.undo(_host(), ctx, ctx.records[snap.id])
    assert (storage / "index-wal").exists()


def test_snapshot_with_links_puts_back_attachments_the_new_version_deleted(tmp_path):
    plan, ctx, storage, _ = _world(tmp_path, "  - stop-service\n  - snapshot: {link_attachments: true}\n"
                                             "  - upgrade\n  - start-service\n")
    host = _host()
    snap = _step(plan, "snapshot")
    rec = _run(snap, host, ctx)
    assert rec.facts["attachments"] == 3
    (storage / "ff/00/cccc").unlink()
    _undo(snap, host, ctx)
    assert (storage / "ff/00/cccc").read_bytes() == b"dicom 2"


@pytest.mark.parametrize("new_name", ["db-v7", HOSTILE, "-starts-with-dash"])
def test_stage_and_relocate_then_undo_leave_the_old_folder_and_config_as_they_were(tmp_path, new_name):
    to = tmp_path / new_name
    plan, ctx, storage, cfg = _world(
        tmp_path, f"  - stop-service\n  - relocate: {{to: '{str(to).replace(chr(39), chr(39) * 2)}'}}\n"
                  "  - upgrade\n  - start-service\n")
    host = _host()
    stage, stop, reloc = build(plan)[:3]
    assert stage.kind == "stage-links"
    old_tree, old_cfg = _digest_tree(storage), cfg.read_bytes()
    cfg_mode = cfg.stat().st_mode
    _run(stage, host, ctx)
    (storage / "0a/1b/dddd").write_bytes(b"arrived after staging")
    (storage / "0a/2c/bbbb").unlink()
    old_tree = _digest_tree(storage)
    rec = _run(reloc, host, ctx)
    assert (rec.facts["linked"], rec.facts["unlinked"]) == (1, 1)
    assert _digest_tree(storage) == old_tree  # the old folder is never written
    assert sorted(_digest_tree(to)) == ["0a/1b/aaaa", "0a/1b/dddd", "ff/00/cccc", "index"]
    assert os.path.samefile(to / "0a/1b/dddd", storage / "0a/1b/dddd")
    new_text = cfg.read_text()
    assert new_text == old_cfg.decode().replace(f'"{storage}"', _json_str(to))
    assert "// the storage" in new_text and "/* trailing comment */" in new_text
    assert cfg.stat().st_mode == cfg_mode
    backup = Path(rec.intent["edits"][0]["backup"])
    assert backup.read_bytes() == old_cfg
    text = _undo(reloc, host, ctx)
    assert cfg.read_bytes() == old_cfg
    assert "moved aside" in text  # the new folder held the index copy: kept, not deleted
    assert not to.exists() and _digest_tree(storage) == old_tree
    _undo(stage, host, ctx)


def _json_str(p: Path) -> str:
    import json

    return json.dumps(str(p))


def test_stage_undo_alone_removes_only_its_links(tmp_path):
    plan, ctx, storage, _ = _world(tmp_path, f"  - stop-service\n  - relocate: {{to: {tmp_path / 'new'}}}\n"
                                             "  - upgrade\n  - start-service\n")
    host = _host()
    stage = build(plan)[0]
    old_tree = _digest_tree(storage)
    _run(stage, host, ctx)
    assert "removed" in _undo(stage, host, ctx)
    assert not (tmp_path / "new").exists() and _digest_tree(storage) == old_tree


def test_relocate_refuses_a_target_in_use_before_anything_runs(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "something").write_text("x")
    plan, ctx, storage, _ = _world(tmp_path, f"  - stop-service\n  - relocate: {{to: {tmp_path / 'busy'}}}\n"
                                             "  - upgrade\n  - start-service\n")
    with pytest.raises(InputError, match="exists and is not empty"):
        build(plan)[2].check(_host(), ctx)


def test_relocate_refuses_a_config_without_storage_directory(tmp_path):
    plan, ctx, storage, cfg = _world(tmp_path, f"  - stop-service\n  - relocate: {{to: {tmp_path / 'n'}}}\n"
                                               "  - upgrade\n  - start-service\n")
    cfg.write_text('{ "HttpPort": 8999 }')
    (cfg.parent / "OrthancStorage").mkdir()  # the default folder exists: only the key is missing
    with pytest.raises(InputError, match="no config file sets StorageDirectory"):
        build(plan)[2].check(_host(), ctx)


def test_upgrade_refuses_a_missing_index_the_fresh_empty_database_trap(tmp_path):
    plan, ctx, storage, _ = _world(tmp_path, "  - stop-service\n  - snapshot\n  - upgrade\n"
                                             "  - start-service\n")
    (storage / "index").unlink()
    with pytest.raises(StepError, match="fresh empty database"):
        _step(plan, "upgrade").intend(_host(), ctx)


def test_upgrade_without_a_rollback_point_is_bad_input(tmp_path):
    plan, ctx, _, _ = _world(tmp_path, "  - stop-service\n  - upgrade\n  - start-service\n")
    with pytest.raises(InputError, match="no snapshot or relocate"):
        build(plan)[1].check(_host(), ctx)


def test_upgrade_argv_is_a_list_with_the_config_last(tmp_path):
    plan, ctx, _, cfg = _world(tmp_path, "  - stop-service\n  - snapshot\n"
                                         "  - upgrade: {log_file: /var/log/orthanc/up.log}\n"
                                         "  - start-service\n")
    intent = _step(plan, "upgrade").intend(_host(), ctx)
    assert intent.argv == ("/usr/sbin/Orthanc", "--upgrade",
                           "--logfile=/var/log/orthanc/up.log", str(cfg))


def test_command_runs_its_argv_without_a_shell_and_its_undo(tmp_path):
    argv = ["/bin/echo", HOSTILE, "-n"]
    undo = ["/bin/echo", "undo; rm -rf /"]
    plan, ctx, _, _ = _world(tmp_path, f"  - command: {{argv: {json.dumps(argv)}, undo: {json.dumps(undo)}}}\n")
    runner = FakeRunner({tuple(argv): Completed((), 0, "", ""), tuple(undo): Completed((), 0, "", "")})
    host = _host(runner=runner)
    step = build(plan)[0]
    _run(step, host, ctx)
    _undo(step, host, ctx)
    assert runner.calls == [tuple(argv), tuple(undo)]


def test_stop_then_its_undo_uses_the_service_port(tmp_path, monkeypatch):
    plan, ctx, _, _ = _world(tmp_path, "  - stop-service\n")
    manager = FakeManager(state=State.RUNNING)
    host = _host(manager=manager)
    stop = build(plan)[0]
    rec = ctx.records.setdefault(stop.id, StepRecord(stop.id, stop.kind))
    intent = stop.intend(host, ctx)
    rec.intent = intent.to_json()
    stop.apply(host, ctx, intent)
    assert manager.state == State.STOPPED and rec.intent["was_running"]
    assert host.changes.texts() == ["stop the process service orthanc-test: kill -TERM 4242"]
    assert stop.holds(host, ctx, rec) is None
    manager.state = State.RUNNING
    assert "runs again" in stop.holds(host, ctx, rec)


class FakeClient:
    """/system and /statistics answers keyed by data: a list of dicts or errors, in order."""

    base_url = "http://orthanc.example:8042"  # not loopback: no listener check on a fake PID

    def __init__(self, answers, stats=None):
        self.answers, self.stats = list(answers), stats

    def system(self):
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def statistics(self):
        return self.stats

    def close(self):
        pass


def _health_host(answers, *, pid=4242, stats=None):
    from orchestrator.host.clock import FakeClock

    manager = FakeManager(state=State.RUNNING)
    manager.status = lambda: ServiceStatus(State.RUNNING, pid)
    client = FakeClient(answers, stats)
    return make_host(dry=False, manager=manager, orthanc=lambda: client, runner=FakeRunner({}),
                     clock=FakeClock())


def test_wait_healthy_fails_at_once_on_401_with_a_credentials_hint():
    from orchestrator.errors import OrthancHttpError
    from orchestrator.steps.healthy import wait_healthy

    host = _health_host([OrthancHttpError("GET /system: HTTP 401", status=401)])
    with pytest.raises(StepError) as err:
        wait_healthy(host, timeout=60)
    assert "refuses the credentials" in err.value.message and "password" in err.value.hint
    assert host.clock.now() == 1000.0  # no polling


def test_wait_healthy_does_not_take_the_old_process_for_the_new_one():
    from orchestrator.steps.healthy import wait_healthy

    host = _health_host([{"Version": "1.10.1", "DatabaseVersion": 6}], pid=4242)
    with pytest.raises(StepError, match="still the old process"):
        wait_healthy(host, timeout=5, old_pid=4242)
    assert wait_healthy(host, timeout=5, old_pid=17).pid == 4242


def test_wait_healthy_polls_through_refusals_then_checks_the_versions():
    from orchestrator.errors import OrthancHttpError
    from orchestrator.steps.healthy import wait_healthy

    down = OrthancHttpError("cannot connect", transient=True)
    host = _health_host([down, down, {"Version": "1.10.1", "DatabaseVersion": 6}])
    assert wait_healthy(host, timeout=60, expect_db=6).waited > 0
    host = _health_host([{"Version": "1.10.1", "DatabaseVersion": 5}])
    with pytest.raises(StepError, match="DatabaseVersion 5, expected 6"):
        wait_healthy(host, timeout=60, expect_db=6)


def test_after_staging_relocate_looks_only_into_folders_that_changed(tmp_path):
    from orchestrator.steps.relocate import delta

    plan, ctx, storage, _ = _world(tmp_path, f"  - stop-service\n  - relocate: {{to: {tmp_path / 'new'}}}\n"
                                             "  - upgrade\n  - start-service\n")
    for i in range(40):  # more folders, all last changed an hour ago
        d = storage / f"{i:02x}" / "aa"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file-{i}").write_bytes(b"x")
    for d in [storage] + [p for p in storage.rglob("*") if p.is_dir()]:
        os.utime(d, (os.stat(d).st_atime - 3600, os.stat(d).st_mtime - 3600))
    host = _host()
    stage = build(plan)[0]
    _run(stage, host, ctx)
    (storage / "0a/1b/new-file").write_bytes(b"new")
    (storage / "05/aa/file-5").unlink()
    listed = []
    real_list = host.files.list_files
    host.files.list_files = lambda folder: listed.append(folder) or real_list(folder)
    added, gone = delta(host, ctx, storage, tmp_path / "new")
    assert added == [os.path.join("0a", "1b", "new-file")]
    assert gone == [os.path.join("05", "aa", "file-5")]
    assert set(listed) <= {storage / "0a" / "1b", tmp_path / "new" / "0a" / "1b",
                           storage / "05" / "aa", tmp_path / "new" / "05" / "aa"}
    ctx.cache.clear()  # after a crash: the full comparison finds the same
    assert delta(host, ctx, storage, tmp_path / "new") == (added, gone)


def test_what_the_manager_had_to_do_reaches_the_report_the_json_and_the_journal(tmp_path):
    from orchestrator.engine import Engine
    from orchestrator.journal import Journal

    class Noted(FakeManager):
        def __init__(self):
            super().__init__(state=State.RUNNING)
            self.notes = ["an old note from the status probe"]

        def stop(self, *, timeout):
            super().stop(timeout=timeout)
            self.notes.append("orthanc-test ignored SIGTERM: systemd killed it after TimeoutStopSec")

    plan, ctx, _, _ = _world(tmp_path, "  - stop-service\n")
    journal = Journal(tmp_path / "svc.journal")
    host = _host(manager=Noted())
    host.processes.alive = lambda pid, started: False  # the fake PID 4242 is not ours
    report = Engine(build(plan), host, journal, ctx, mode="run").execute()
    note = "orthanc-test ignored SIGTERM: systemd killed it after TimeoutStopSec"
    row = report.steps[0]
    assert report.exit_code == 0 and row.notes == [note]
    assert row.detail == f"stopped (PID 4242); {note}"
    assert report.notes == [f"stop-service: {note}"]
    assert report.to_dict()["steps"][0]["notes"] == [note]
    assert journal.last_run().steps["stop-service"].facts["notes"] == [note]
