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
