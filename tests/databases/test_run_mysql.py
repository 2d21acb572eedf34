"""`orchestrator run/rollback` on a MariaDB-backed Orthanc 1.10.1 + Debian's orthanc-mysql 4.3.

MySQL plugin 5.0 raises the revision from 6 to 7 at its first start, and 4.3 then refuses
the database: only a restored dump brings it back. The 5.0 package is not installed here,
so a `command` step does to the stopped database what 5.0 does (revision 7, a Labels
table), and the migrating start of 4.3 then fails exactly as after a real downgrade.
"""

from __future__ import annotations

import json

import pytest

from tests.databases.conftest import PASSWORD
from tests.harness.databases import MYSQL_PLUGIN, MariaDBServer
from tests.harness.dicom import make_dataset
from tests.harness.world import World, sha256

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]

PLAN = """  - preflight
  - stop-service: {{timeout: 60}}
  - snapshot
{touch}  - upgrade: {{timeout: 300, stall: 60}}
  - start-service: {{timeout: 60}}
  - health-check: {{timeout: 60}}
"""


def my_world(world_factory, mariadb: MariaDBServer, name: str) -> World:
    mariadb.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    w = world_factory(name, overrides={"Plugins": [str(MYSQL_PLUGIN)],
                                       "MySQL": mariadb.section(name, "orthanc", PASSWORD)})
    w.start()
    w.upload(make_dataset(6, per_series=3, rows=16, cols=16, seed=name))
    return w


def _as_5_0(mariadb: MariaDBServer, name: str) -> str:
    sql = ("UPDATE GlobalProperties SET value = '7' WHERE property = 4; "
           "CREATE TABLE Labels(id BIGINT, label VARCHAR(64));")
    argv = ["mariadb", "--no-defaults", f"--socket={mariadb.socket}", "-u", "root", name,
            "-e", sql]
    return f"  - command: {{argv: {json.dumps(argv)}}}\n"


def test_success_dump_then_migrating_start(world_factory, mariadb):
    w = my_world(world_factory, mariadb, "myok")
    rest = w.counts()
    rc, report, err = w.cli("run", str(w.plan(PLAN.format(touch=""))))
    assert rc == 0, json.dumps(report)[-2000:] + err
    assert w.counts() == rest
    w.upload(make_dataset(1, per_series=1, rows=8, cols=8, seed="after"))
    dumps = list(w.state.rglob("myok*.sql"))
    assert dumps and all(d.stat().st_size > 0 for d in dumps)
    assert "CreateInstance" in max(dumps, key=lambda d: d.stat().st_mtime).read_text()


def test_rollback_after_a_newer_plugin_touched_the_database_restores_the_dump(world_factory,
                                                                                mariadb):
    w = my_world(world_factory, mariadb, "myback")
    rest, config = w.counts(), w.config.read_text()
    rc, report, err = w.cli("run", str(w.plan(PLAN.format(touch=_as_5_0(mariadb, "myback")))))
    assert rc == 3, json.dumps(report)[-3000:] + err
    steps = {s["id"]: s for s in report["steps"]}
    assert "incompatible with database schema revision: 7" in json.dumps(steps["upgrade"])
    # The touched database is kept as it is; the config names a restored copy.
    assert mariadb.sql("SELECT value FROM GlobalProperties WHERE property = 4;", "myback") == "7"
    restored = [d for d in mariadb.sql("SHOW DATABASES;").split()
                if d.startswith("myback_restored_")]
    assert len(restored) == 1, restored
    assert mariadb.sql("SELECT value FROM GlobalProperties WHERE property = 4;",
                       restored[0]) == "6"
    assert mariadb.sql("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                       f"WHERE SCHEMA_NAME = '{restored[0]}';") == "utf8mb4_unicode_ci"
    after = w.config.read_text()
    assert after == config.replace('"Database": "myback"', f'"Database": "{restored[0]}"')
    # The old plugin serves the restored database, and stores (the procedure came along).
    assert w.counts() == rest
    w.upload(make_dataset(1, per_series=1, rows=8, cols=8, seed="after-restore"))
    assert w.counts()["CountInstances"] == rest["CountInstances"] + 1
    assert "restored" in json.dumps(steps["snapshot"])
    assert sha256(w.config)


def test_revert_restores_the_dump_and_carries_back_what_arrived(world_factory, mariadb):
    """A finished MariaDB upgrade (snapshot = a dump), studies stored on the new version, then
    `revert`: the old state comes back from the dump and the new studies are carried back."""
    w = my_world(world_factory, mariadb, "myrev")
    plan = w.plan(PLAN.format(touch=""))
    rc, report, err = w.cli("run", str(plan))
    assert rc == 0, json.dumps(report)[-2000:] + err
    before = set(w.get("/instances"))
    w.upload(make_dataset(2, per_series=1, rows=8, cols=8, seed="after-upgrade"))
    arrived = set(w.get("/instances")) - before
    assert len(arrived) == 2
    rc, report, err = w.cli("revert", str(plan))
    assert rc == 0, json.dumps(report)[-2000:] + err
    assert "2 instances received since the upgrade were carried back" in json.dumps(report)
    assert set(w.get("/instances")) == before | arrived
