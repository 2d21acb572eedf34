"""The hazard table, as data: facts in, hazard codes out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.orthanc.binary import parse_version
from orchestrator.orthanc.config import OrthancConfig
from orchestrator.orthanc.hazards import Severity, assess
from orchestrator.orthanc.index import IndexFacts

BASE = OrthancConfig(
    path=Path("/etc/orthanc"), files=(Path("/etc/orthanc/orthanc.json"),), values={},
    warnings=(), storage_dir=Path("/var/lib/orthanc/db-v6"),
    index_dir=Path("/var/lib/orthanc/db-v6"), compression=False, store_md5=True,
    index_backend="sqlite", storage_backend="filesystem", http_port=8042, ssl=False,
    remote_access=False, auth_enabled=False, registered_users=(), max_storage_size=0,
    max_patient_count=0, plugins=())
INDEX = Path("/var/lib/orthanc/db-v6/index")
COUNTS = {"patients": 1, "studies": 1, "series": 1, "instances": 3}


def index(version: int | None = 6, **kw) -> IndexFacts:
    fields = dict(path=INDEX, exists=True, schema_version=version, counts=dict(COUNTS))
    fields.update(kw)
    return IndexFacts(**fields)


def codes(config=BASE, ix=None, version="1.10.1", **kw) -> list[str]:
    v = parse_version(version) if version else None
    return [h.code for h in assess(config, ix if ix is not None else index(), v, **kw)]


# (binary, index schema) -> the version hazards
@pytest.mark.parametrize("binary, schema, expected", [
    ("1.10.1", 6, []),
    ("1.10.1", 5, ["upgrade-deadlock"]),
    ("1.10.1", 3, ["upgrade-deadlock"]),
    ("1.9.2", 4, ["upgrade-deadlock"]),
    ("1.12.7", 5, ["upgrade-deadlock"]),
    ("1.9.1", 5, ["upgrade-needed"]),
    ("1.12.8", 5, ["upgrade-needed"]),
    ("mainline", 5, ["version-beyond-table", "upgrade-needed"]),
    ("1.10.1", 2, ["schema-too-old"]),
    ("1.10.1", 1, ["schema-too-old"]),
    ("1.10.1", 7, ["schema-too-new"]),
    ("0.9.4", 6, ["schema-too-new"]),
    ("1.12.0", 6, ["binary-upgrade-changes-index"]),
    ("1.12.8", 6, ["binary-upgrade-changes-index"]),
    ("1.14.0", 6, ["version-beyond-table", "binary-upgrade-changes-index"]),
])
def test_version_against_schema(binary, schema, expected):
    assert sorted(codes(ix=index(schema), version=binary)) == sorted(expected)


def test_blockers_come_first():
    config = replace(BASE, max_storage_size=10)
    hazards = assess(config, index(5), parse_version("1.10.1"))
    assert [h.code for h in hazards] == ["upgrade-deadlock", "size-limited"]
    assert hazards[0].severity is Severity.BLOCKER and hazards[0].hint
    assert hazards[0].to_dict()["severity"] == "blocker"


@pytest.mark.parametrize("ix, expected", [
    (IndexFacts(INDEX, exists=False), ["index-missing"]),
    (IndexFacts(INDEX, exists=False, accessible=False, error="permission denied"),
     ["index-unreadable"]),
    (IndexFacts(INDEX, exists=True, locked=True, locked_by=42, error="locked"), ["index-locked"]),
    (IndexFacts(INDEX, exists=True, error="not an Orthanc index: no such table"),
     ["index-unreadable"]),
    (index(6, wal_pending=True), ["index-not-clean"]),
])
def test_index_states(ix, expected):
    assert codes(ix=ix) == expected


def test_locked_names_the_pid():
    ix = IndexFacts(INDEX, exists=True, locked=True, locked_by=4242, error="locked")
    (hazard,) = assess(BASE, ix, parse_version("1.10.1"))
    assert "pid 4242" in hazard.message and hazard.severity is Severity.WARNING


def test_an_index_opened_by_1_12_is_refused_by_an_older_binary():
    ix = index(6, tables=("AttachedFiles", "Labels", "Resources"))
    assert codes(ix=ix, version="1.11.3") == ["index-from-newer-binary"]
    assert codes(ix=ix, version="1.12.1") == ["binary-upgrade-changes-index"]


@pytest.mark.parametrize("changes, expected", [
    ({"index_backend": "postgresql"}, ["non-sqlite-index", "backend-plugin-missing"]),
    ({"index_backend": "postgresql", "plugins": ("/usr/share/orthanc/plugins",)},
     ["non-sqlite-index", "backend-plugin-missing"]),
    ({"index_backend": "postgresql", "plugins": ("/p",),
      "plugin_files": (Path("/p/libOrthancPostgreSQLIndex.so"),)}, ["non-sqlite-index"]),
    ({"storage_backend": "aws-s3"}, ["non-filesystem-storage"]),
    ({"disabled_backends": ("PostgreSQL.EnableIndex",)}, ["backend-not-enabled"]),
    ({"max_patient_count": 100}, ["size-limited"]),
    ({"http_enabled": False}, ["http-disabled"]),
    ({"auth_enabled": True, "remote_access": True}, ["default-user"]),
    ({"auth_enabled": True}, ["no-users"]),
    ({"auth_enabled": True, "registered_users": ("alice",)}, []),
])
def test_config_hazards(changes, expected):
    assert codes(config=replace(BASE, **changes)) == expected


def test_non_sqlite_index_skips_the_index_and_version_checks():
    config = replace(BASE, index_backend="mysql", plugin_files=(Path("/p/libOrthancMySQLIndex.so"),))
    assert codes(config=config, ix=IndexFacts(INDEX, exists=False), version="1.10.1") == [
        "non-sqlite-index"]


def test_size_limit_wording_follows_the_mode():
    config = replace(BASE, max_storage_size=500, max_storage_mode="Reject")
    (hazard,) = assess(config, index(), parse_version("1.12.1"))[:1]
    assert "refuses new instances" in hazard.message


def test_no_binary_and_a_failing_binary():
    assert codes(version=None) == ["binary-unknown"]
    assert codes(version=None, binary_error="Orthanc --version exited with 127") == [
        "binary-unusable"]


def test_the_debian_fresh_install_facts():
    """This machine's case: Debian layout, db-v6 not created yet, binary 1.10.1."""
    hazards = assess(BASE, IndexFacts(INDEX, exists=False), parse_version("1.10.1"))
    assert [(h.code, h.severity) for h in hazards] == [("index-missing", Severity.BLOCKER)]
    assert "fresh, empty database" in hazards[0].hint


# -- databases (docs/databases.md) --------------------------------------------------------
from orchestrator.host.databases import Engine, ServerFacts  # noqa: E402
from orchestrator.orthanc.backends import DatabaseSection  # noqa: E402
from orchestrator.orthanc.plugin_index import DatabaseIndexFacts  # noqa: E402

PG_CONFIG = replace(BASE, index_backend="postgresql", plugins=("/usr/share/orthanc/plugins",),
                    plugin_files=(Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so"),))


def section(engine=Engine.MYSQL, **kw) -> DatabaseSection:
    fields = dict(engine=engine, section="MySQL" if engine is Engine.MYSQL else "PostgreSQL",
                  file=Path("/etc/orthanc/db.json"), index=True, storage=True, host="localhost",
                  port=3306, database="orthanc", user="orthanc", password="x")
    fields.update(kw)
    return DatabaseSection(**fields)


def db_facts(revision=6, **kw) -> DatabaseIndexFacts:
    fields = dict(engine=Engine.MYSQL, database="orthanc", where="localhost:3306", reachable=True,
                  server=ServerFacts("10.11.19-MariaDB", True), schema_version=6,
                  revision=revision, tables=("GlobalProperties", "Resources"))
    fields.update(kw)
    return DatabaseIndexFacts(**fields)


def db_codes(sec=None, facts=None, plugin="4.3", target=None, config=PG_CONFIG):
    return [h.code for h in assess(config, None, parse_version("1.10.1"),
                                   backends=(sec or section(),), database=facts,
                                   plugin_version=plugin, target_plugin_version=target)]


@pytest.mark.parametrize("revision, plugin, target, expected", [
    (6, "4.3", None, []),
    (7, "4.3", None, ["plugin-revision-too-new"]),  # 5.0 touched it, 4.3 is back
    (7, "5.0", "4.3", ["plugin-downgrade-meets-newer-revision"]),
    (6, "4.3", "5.0", ["plugin-migrates-on-start"]),
    (6, "9.9", None, []),  # a version the table does not know: no claim
])
def test_mysql_revision_against_the_plugin(revision, plugin, target, expected):
    codes_ = db_codes(facts=db_facts(revision), plugin=plugin, target=target)
    assert [c for c in codes_ if c not in ("non-sqlite-index",)] == expected


def test_files_on_disk_with_the_index_in_the_database_is_the_copy_trap():
    assert "copied-index-shares-files" in db_codes(sec=section(storage=False))
    assert "copied-index-shares-files" not in db_codes(sec=section(storage=True))


def test_unreachable_database_blocks():
    hazards = assess(PG_CONFIG, None, None, backends=(section(),),
                     database=DatabaseIndexFacts(Engine.MYSQL, "orthanc", "x", error="refused"))
    assert hazards[0].code == "database-unreachable" and hazards[0].severity is Severity.BLOCKER
    assert "/etc/orthanc/db.json: MySQL" in hazards[0].message


def test_postgresql_role_without_createdb_and_a_database_in_use():
    facts = db_facts(1, engine=Engine.POSTGRESQL, server=ServerFacts("15.18", False), in_use=True)
    found = db_codes(sec=section(Engine.POSTGRESQL), facts=facts, plugin="4.0")
    assert "role-cannot-create-db" in found and "database-in-use" in found


def test_plugin_listed_but_not_found():
    config = replace(PG_CONFIG, plugins=("/usr/share/orthanc/plugins", "/opt/missing.so"))
    assert "plugin-not-found" in db_codes(config=config)
    assert "plugin-not-found" not in db_codes()


def test_dump_space_against_the_database_size():
    """MySQL's text dump may take twice the database (BLOBs in hex); PostgreSQL's, its size."""
    def space_codes(engine, revision):
        facts = db_facts(revision, engine=engine, size=300 * 2**20)
        return [h.code for h in assess(PG_CONFIG, None, None, backends=(section(engine),),
                                       database=facts, dump_free=500 * 2**20)]
    assert "dump-space" in space_codes(Engine.MYSQL, 6)
    assert "dump-space" not in space_codes(Engine.POSTGRESQL, 1)
