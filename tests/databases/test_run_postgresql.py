"""`orchestrator plan/run/status/rollback` on a PostgreSQL-backed Orthanc, for real.

A World (tests/harness/world.py: a process-managed Orthanc 1.10.1, driven
through the CLI as a child process) whose index is in its own database on the
session's PostgreSQL 15, with Debian's orthanc-postgresql 4.0. Its attachments
are files, so a relocate clones the database *and* hard-links the storage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.databases.conftest import PASSWORD
from tests.harness.databases import PG_PLUGIN, PostgresServer
from tests.harness.dicom import make_dataset
from tests.harness.world import World, sha256

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

PLAN = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
  - relocate: {{database: {new}, to: {to}}}
  - upgrade: {{timeout: 300, stall: 60}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: {health}{expect}}}
"""


def pg_world(world_factory, postgres: PostgresServer, name: str, *, instances: int = 6,
             section: dict | None = None) -> World:
    postgres.sql(f'CREATE DATABASE "{name}" OWNER orthanc;')
    body = section or postgres.section(name, "orthanc", PASSWORD)
    w = world_factory(name, overrides={"Plugins": [str(PG_PLUGIN)], "PostgreSQL": body})
    w.start()
    w.upload(make_dataset(instances, per_series=3, rows=16, cols=16, seed=name))
    return w


def plan_for(w: World, new: str, *, health: int = 60, expect: str = "") -> Path:
    to = w.db.parent / "db-v6-next"
    return w.plan(PLAN.format(new=new, to=json.dumps(str(to)), health=health, expect=expect))


def databases(postgres: PostgresServer) -> set[str]:
    return set(postgres.sql("SELECT datname FROM pg_database;").split())


def db_counts(postgres: PostgresServer, name: str) -> str:
    return postgres.sql("SELECT resourcetype, count(*) FROM resources GROUP BY 1 ORDER BY 1;",
                        database=name)


def store(w: World, seed: str) -> None:
    w.upload(make_dataset(1, per_series=1, rows=8, cols=8, seed=seed))


def snapshot_of(w: World, postgres: PostgresServer, name: str) -> dict:
    return {"config": sha256(w.config), "counts": db_counts(postgres, name),
            "databases": databases(postgres)}


def test_success_clone_then_a_second_upgrade(world_factory, postgres):
    w = pg_world(world_factory, postgres, "pgok")
    # Without its revision row, plugin 4.0 migrates at start (writes revision 1): the
    # upgrade step's watched start runs, on the clone only.
    postgres.sql("DELETE FROM globalproperties WHERE property = 4;", database="pgok")
    before, rest = db_counts(postgres, "pgok"), w.counts()
    text = w.config.read_text()
    rc, report, err = w.cli("run", str(plan_for(w, "pgok_next")))
    assert rc == 0, (report, err)
    assert w.counts() == rest
    # The config names the clone, every other byte kept (the comment too).
    after = w.config.read_text()
    assert '"Database": "pgok_next"' in after and "// written by the test world" in after
    assert after.replace("pgok_next", "pgok").replace("db-v6-next", "db-v6") == text
    # The clone belongs to the plugin's role (the owner trap), and stores work on it.
    assert postgres.sql("SELECT pg_get_userbyid(datdba) FROM pg_database "
                        "WHERE datname = 'pgok_next';") == "orthanc"
    store(w, "after-run")
    assert w.counts()["CountInstances"] == rest["CountInstances"] + 1
    # The old database was never written again: the rollback point.
    assert db_counts(postgres, "pgok") == before
    assert postgres.sql("SELECT count(*) FROM globalproperties WHERE property = 4;",
                        database="pgok") == "0"
    assert postgres.sql("SELECT value FROM globalproperties WHERE property = 4;",
                        database="pgok_next") == "1"
    steps = {s["id"]: s for s in report["steps"]}
    assert "clone" in steps["relocate"]["detail"]
    assert "migrated" in steps["upgrade"]["detail"] and "revision 1" in steps["upgrade"]["detail"]
    # A second upgrade from the clone (its owner is the role: CREATE DATABASE works).
    w2 = w.plan(PLAN.format(new="pgok_next2", to=json.dumps(str(w.db.parent / "db-v6-next2")),
                            health=60, expect=""), name="second.yaml")
    rc, report, err = w.cli("run", str(w2))
    assert rc == 0, (report, err)
    assert w.counts()["CountInstances"] == rest["CountInstances"] + 1
    store(w, "after-second-run")


def test_a_failed_health_check_rolls_back_to_the_old_database(world_factory, postgres):
    w = pg_world(world_factory, postgres, "pgfail")
    was = snapshot_of(w, postgres, "pgfail")
    rest = w.counts()
    plan = plan_for(w, "pgfail_next", health=5, expect=", expect: {database_version: 7}")
    rc, report, err = w.cli("run", str(plan))
    assert rc == 3, json.dumps(report)[-3000:] + err
    assert sha256(w.config) == was["config"]  # byte for byte
    assert db_counts(postgres, "pgfail") == was["counts"] and w.counts() == rest
    store(w, "after-rollback")  # the old service stores on the old database
    kept = databases(postgres) - was["databases"]
    assert len(kept) == 1 and next(iter(kept)).startswith("pgfail_next_rolled_back_")
    assert "pgfail_next" not in databases(postgres)
    undo = {s["id"]: s for s in report["steps"]}["relocate"]
    assert "kept for inspection as pgfail_next_rolled_back_" in json.dumps(undo)


def test_plan_changes_nothing_and_writes_nothing(world_factory, postgres):
    w = pg_world(world_factory, postgres, "pgdry")
    was = snapshot_of(w, postgres, "pgdry")
    ddl = postgres.log_text().count("statement: CREATE DATABASE")
    rc, report, err = w.cli("plan", str(plan_for(w, "pgdry_next")))
    assert rc == 0, json.dumps(report)[-3000:] + err
    changes = json.dumps(report)
    assert "clone database pgdry into pgdry_next" in changes and "pg_dump" in changes
    assert snapshot_of(w, postgres, "pgdry") == was and w.counts()
    assert postgres.log_text().count("statement: CREATE DATABASE") == ddl
    assert not list(w.state.rglob("*.dump"))


# -- kill -9 in the middle, then status and rollback ---------------------------------------

def _background_run(w: World, plan: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    import sys
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(plan), "--json"],
                            cwd=w.root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for(postgres: PostgresServer, pattern: str, timeout: float = 120) -> None:
    """Until a session runs a statement like `pattern` and waits for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if postgres.sql("SELECT count(*) FROM pg_stat_activity WHERE query ILIKE "
                        f"'{pattern}' AND wait_event_type = 'Lock' "
                        "AND pid <> pg_backend_pid();") != "0":
            return
        time.sleep(0.1)
    raise AssertionError(f"no session ran {pattern}")


class Blocker:
    """A superuser session holding a lock, so the tool's statement waits for it."""

    def __init__(self, postgres: PostgresServer, database: str, statement: str):
        self.postgres = postgres
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-h", str(postgres.socket_dir), "-p", str(postgres.port),
             "-U", "postgres", "-d", database], stdin=subprocess.PIPE, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc.stdin.write(f"BEGIN; {statement}; SELECT pg_sleep(600);\n")
        self.proc.stdin.flush()

    def release(self) -> None:
        # The server does not notice a dead client while it sleeps: end the backend itself.
        self.postgres.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid();")
        self.proc.kill()
        self.proc.wait(30)


def _kill_tree_of(run: subprocess.Popen) -> None:
    """kill -9 of the tool only (its children, e.g. psql, are orphaned, as after a crash)."""
    os.kill(run.pid, signal.SIGKILL)
    run.wait(30)


def _rolled_back(w: World, postgres: PostgresServer, plan: Path, name: str, was: dict,
                 rest: dict) -> dict:
    rc, status, _ = w.cli("status", str(plan))
    assert rc == 5 and status["run"]["open"], status
    rc, report, err = w.cli("rollback", str(plan))
    assert rc == 0, json.dumps(report)[-3000:] + err
    assert sha256(w.config) == was["config"]
    assert db_counts(postgres, name) == was["counts"] and w.counts() == rest
    store(w, f"after-crash-{name}")
    return report


def test_kill_during_the_clone(world_factory, postgres):
    """The tool dies while CREATE DATABASE runs; the orphaned statement still makes the copy,
    and rollback finds it and renames it aside."""
    w = pg_world(world_factory, postgres, "pgkclone")
    was, rest = snapshot_of(w, postgres, "pgkclone"), w.counts()
    blocker = None
    try:
        plan = plan_for(w, "pgkclone_next")
        # CREATE DATABASE writes pg_database: a lock on it holds the clone mid-statement.
        blocker = Blocker(postgres, "postgres", "LOCK TABLE pg_catalog.pg_database IN "
                                                "SHARE ROW EXCLUSIVE MODE")
        run = _background_run(w, plan)
        _wait_for(postgres, "CREATE DATABASE%pgkclone_next%")
        _kill_tree_of(run)
        blocker.release()
        blocker = None
        report = _rolled_back(w, postgres, plan, "pgkclone", was, rest)
    finally:
        if blocker is not None:
            blocker.release()
    kept = databases(postgres) - was["databases"]
    assert "pgkclone_next" not in databases(postgres)
    assert len(kept) == 1 and next(iter(kept)).startswith("pgkclone_next_rolled_back_"), kept
    assert report["outcome"] in ("rolled-back", "rolled back"), report


def test_kill_during_the_dump(world_factory, postgres):
    w = pg_world(world_factory, postgres, "pgkdump")
    was, rest = snapshot_of(w, postgres, "pgkdump"), w.counts()
    blocker = None
    try:
        plan = plan_for(w, "pgkdump_next")
        # pg_dump waits for its share lock on the changes table (which preflight and an idle
        # Orthanc do not read).
        blocker = Blocker(postgres, "pgkdump", "LOCK TABLE changes IN ACCESS EXCLUSIVE MODE")
        run = _background_run(w, plan)
        _wait_for(postgres, "%LOCK TABLE%IN ACCESS SHARE MODE%")
        _kill_tree_of(run)
        for proc in psutil.process_iter(["name", "cmdline"]):  # the orphaned pg_dump, by PID
            if proc.info["name"] == "pg_dump" and "--dbname=pgkdump" in (proc.info["cmdline"] or []):
                proc.kill()
        blocker.release()
        blocker = None
        _rolled_back(w, postgres, plan, "pgkdump", was, rest)
    finally:
        if blocker is not None:
            blocker.release()
    assert databases(postgres) == was["databases"]
    assert not list(w.state.rglob("*.orchestrator-tmp"))


def test_kill_during_the_migrating_start(world_factory, postgres):
    """A database without its revision row is one that plugin 4.0 migrates at start (it
    writes revision 1): the upgrade step's watched start runs, and the tool dies in it."""
    w = pg_world(world_factory, postgres, "pgkstart")
    postgres.sql("DELETE FROM globalproperties WHERE property = 4;", database="pgkstart")
    was, rest = snapshot_of(w, postgres, "pgkstart"), w.counts()
    plan = plan_for(w, "pgkstart_next")
    rc, _, err = w.cli("run", str(plan), env={"ORCHESTRATOR_TEST_CRASH_AT": "upgrade:during"})
    assert rc == -9, err
    _rolled_back(w, postgres, plan, "pgkstart", was, rest)
    assert len(w.processes()) == 1  # the migrating child was ended, the old service runs
    kept = databases(postgres) - was["databases"]
    assert len(kept) == 1 and next(iter(kept)).startswith("pgkstart_next_rolled_back_")


# -- bad input through `plan` and `run`: one line naming the file and key, nothing changed ----

def _bad(world_factory, postgres, name: str, *, section: dict | None = None,
         start: bool = True) -> World:
    postgres.sql(f'CREATE DATABASE "{name}" OWNER orthanc;')
    body = postgres.section(name, "orthanc", PASSWORD)
    body.update(section or {})
    w = world_factory(name, overrides={"Plugins": [str(PG_PLUGIN)], "PostgreSQL": body})
    if start:
        w.start()
    return w


def _refused(w: World, postgres: PostgresServer, plan: Path, rc_wanted: int, starts: str,
             env: dict | None = None) -> None:
    was = (sha256(w.config), databases(postgres))
    for command in ("plan", "run"):
        rc, report, err = w.cli(command, str(plan), env=env)
        assert rc == rc_wanted, (command, json.dumps(report)[-1500:], err)
        error = report["error"]
        assert "\n" not in error and str(w.config) in error and starts in error, error
        assert "Traceback" not in err
        assert (sha256(w.config), databases(postgres)) == was
        assert not list(w.state.rglob("*.dump"))


def test_bad_unreachable_database(world_factory, postgres):
    from tests.harness.orthanc import free_port
    w = _bad(world_factory, postgres, "badhost", section={"Port": free_port()}, start=False)
    _refused(w, postgres, plan_for(w, "badhost_next"), 1, "PostgreSQL.Host:")


def test_bad_wrong_password(world_factory, postgres):
    w = _bad(world_factory, postgres, "badpw", section={"Password": "wrong"}, start=False)
    _refused(w, postgres, plan_for(w, "badpw_next"), 1, "PostgreSQL.Password:")


def test_bad_role_without_createdb(world_factory, postgres):
    postgres.add_role("runnocreate", PASSWORD, createdb=False)
    postgres.sql('CREATE DATABASE "badrole" OWNER runnocreate;')
    body = postgres.section("badrole", "runnocreate", PASSWORD)
    w = world_factory("badrole", overrides={"Plugins": [str(PG_PLUGIN)], "PostgreSQL": body})
    w.start()
    _refused(w, postgres, plan_for(w, "badrole_next"), 1, "PostgreSQL.Username:")
    assert w.counts()  # still serving


def test_bad_target_name_exists(world_factory, postgres):
    w = _bad(world_factory, postgres, "badexists")
    postgres.sql('CREATE DATABASE "badexists_next" OWNER orthanc;')
    _refused(w, postgres, plan_for(w, "badexists_next"), 1, "PostgreSQL: a database named "
                                                           "badexists_next already exists")


def test_bad_disk_too_small_for_the_dump(world_factory, postgres, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        w = _bad(world_factory, postgres, "badspace")
        plan = w.plan(PLAN.replace("  - snapshot\n", f"  - snapshot: {{{{dir: {small}}}}}\n")
                      .format(new="badspace_next", to=json.dumps(str(w.db.parent / "n")),
                              health=60, expect=""))
        _refused(w, postgres, plan, 1, "PostgreSQL:")
        assert not list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_bad_pg_dump_missing(world_factory, postgres, tmp_path):
    import shutil
    w = _bad(world_factory, postgres, "badtool")
    only = tmp_path / "bin"
    only.mkdir()
    (only / "psql").symlink_to(shutil.which("psql"))
    _refused(w, postgres, plan_for(w, "badtool_next"), 1, "PostgreSQL: pg_dump is not installed",
             env={"PATH": str(only)})


def test_bad_section_present_but_disabled(world_factory, postgres):
    w = _bad(world_factory, postgres, "baddisabled", section={"EnableIndex": "true"},
             start=False)
    _refused(w, postgres, plan_for(w, "baddisabled_next"), 2, "PostgreSQL.EnableIndex:")


def test_inspect_shows_the_database_and_its_hazards(world_factory, postgres):
    w = pg_world(world_factory, postgres, "pginspect")
    rc, data, err = w.cli("inspect", str(w.config))
    assert rc == 0, err
    db = data["database"]
    assert db["plugin_version"] == "4.0" and db["index"]["counts"]["instances"] == 6
    assert db["index"]["revision"] == 1 and db["index"]["in_use"]
    assert db["sections"][0]["password_from"] == "config"
    assert PASSWORD not in json.dumps(data)
    codes = {h["code"] for h in data["hazards"]}
    assert {"copied-index-shares-files", "database-in-use"} <= codes
    rc, text, err = w.cli("inspect", str(w.config), json_out=False)
    assert rc == 0 and "Database index (PostgreSQL / MySQL)" in text and PASSWORD not in text


def test_revert_a_day_later_carries_back_what_the_new_version_received(world_factory, postgres):
    """A finished PostgreSQL upgrade, then studies stored on the new version, then `revert`:
    the config names the old database again and every instance stored since the upgrade is
    on it, with the MD5 of its bytes (read from the new version over REST)."""
    w = pg_world(world_factory, postgres, "pgrev")
    text = w.config.read_text()
    plan = plan_for(w, "pgrev_next")
    rc, report, err = w.cli("run", str(plan))
    assert rc == 0, (report, err)
    before = set(w.get("/instances"))
    store(w, "after-upgrade-1")
    store(w, "after-upgrade-2")
    arrived = {i: requests.get(f"{w.url}/instances/{i}/attachments/dicom/md5", timeout=10).text
               for i in set(w.get("/instances")) - before}
    assert len(arrived) == 2
    rc, dry, err = w.cli("revert", "--dry-run", str(plan))
    assert rc == 0 and "copy the 2 instances the old version lacks" in json.dumps(dry), (dry, err)
    rc, report, err = w.cli("revert", str(plan))
    assert rc == 0, (report, err)
    assert w.config.read_text() == text  # the old database again, every other byte kept
    assert "2 instances received since the upgrade were carried back" in json.dumps(report)
    now = set(w.get("/instances"))
    assert before | set(arrived) == now
    for iid, md5 in arrived.items():
        assert requests.get(f"{w.url}/instances/{iid}/attachments/dicom/md5",
                            timeout=10).text == md5
    assert postgres.sql("SELECT count(*) FROM resources WHERE resourcetype = 3;",  # 0-based
                        database="pgrev") == str(len(now))
