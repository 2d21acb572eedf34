"""The database port and the index facts against a real MariaDB 10.11 and Orthanc 1.10.1 +
Debian's orthanc-mysql 4.3."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.host.databases import (
    CreateDatabaseDeniedError, DatabaseAuthError, DatabaseExistsError, DatabaseUnreachableError,
    UnsupportedError)
from orchestrator.orthanc.backends import plugin_version
from orchestrator.orthanc.config import load_config
from orchestrator.orthanc.hazards import assess
from orchestrator.orthanc.plugin_index import backend_plugin, read_database_index
from tests.databases.conftest import PASSWORD, counts, store_one
from tests.harness.orthanc import free_port

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


def test_facts_online_then_offline(mariadb, site_factory):
    site = site_factory(mariadb, "facts")
    online = read_database_index(site.section, site.databases)
    assert online.error is None and "MariaDB" in online.server.version
    assert (online.schema_version, online.revision) == (6, 6)
    assert online.counts == counts(site.orthanc) and online.counts["instances"] == 6
    assert online.in_use and online.sessions and online.size > 0
    assert backend_plugin(site.orthanc.get("/system")) == (site.section.engine, "4.3")
    site.orthanc.stop()
    offline = read_database_index(site.section, site.databases)
    assert offline.counts == online.counts and not offline.in_use and offline.sessions == ()


def test_dump_keeps_the_procedure_and_restores_into_utf8mb4_unicode(mariadb, site_factory,
                                                                     tmp_path):
    site = site_factory(mariadb, "dumped")
    before = counts(site.orthanc)
    dump = site.databases.dump(site.conn, tmp_path / "dumped.sql")  # online, one transaction
    assert dump.sha256 and b"CreateInstance" in dump.path.read_bytes()
    site.orthanc.stop()
    site.databases.restore(site.conn, dump.path, "dumped_restored", sha256=dump.sha256)
    assert mariadb.sql("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                       "WHERE SCHEMA_NAME = 'dumped_restored';") == "utf8mb4_unicode_ci"
    again = site_factory.orthanc_on(mariadb, "dumped_restored", storage=site.orthanc.storage)
    assert counts(again) == before
    assert store_one(again, "after-restore")["Status"] == "Success"
    assert read_database_index(site.section, site.databases).counts == before


def test_clone_is_a_dump_restored(mariadb, site_factory):
    site = site_factory(mariadb, "cloned")
    before = counts(site.orthanc)
    site.orthanc.stop()
    site.databases.clone(site.conn, "cloned_next")
    again = site_factory.orthanc_on(mariadb, "cloned_next", storage=site.orthanc.storage)
    assert counts(again) == before
    assert store_one(again, "after-clone")["Status"] == "Success"


def test_a_newer_revision_stops_the_old_plugin_and_the_hazard_says_so(mariadb, site_factory):
    """What MySQL plugin 5.0 leaves behind (revision 7): 4.3 refuses to start on it."""
    site = site_factory(mariadb, "newer", instances=3)
    site.orthanc.stop()
    mariadb.sql("UPDATE GlobalProperties SET value = '7' WHERE property = 4;", "newer")
    config = load_config(site.orthanc.config_path)
    facts = read_database_index(site.section, site.databases)
    found = assess(config, None, None, backends=(site.section,), database=facts,
                   plugin_version=plugin_version(config, site.section.engine))
    assert found[0].code == "plugin-revision-too-new" and "4.3" in found[0].message
    with pytest.raises(RuntimeError, match="Orthanc exited"):
        site.orthanc.start(timeout=30)
    assert "incompatible with database schema revision: 7" in site.orthanc.log_text()


def test_bad_inputs(mariadb, site_factory, tmp_path):
    site = site_factory(mariadb, "bad", instances=3)
    site.orthanc.stop()
    unreachable = replace(site.section, port=free_port())
    assert not read_database_index(unreachable, site.databases).reachable
    with pytest.raises(DatabaseUnreachableError) as info:
        site.databases.dump(unreachable.connection(), tmp_path / "x.sql")
    _one_line(info.value, site.section, "Host")
    with pytest.raises(DatabaseAuthError) as info:
        site.databases.clone(replace(site.section, password="wrong").connection(), "bad_next")
    _one_line(info.value, site.section, "Password")
    with pytest.raises(DatabaseExistsError):
        site.databases.clone(site.conn, "facts" if _has(mariadb, "facts") else "mysql")
    with pytest.raises(UnsupportedError):
        site.databases.rename(site.conn, "bad", "bad_renamed")
    mariadb.add_user("limited", PASSWORD, global_create=False, database="bad")
    with pytest.raises(CreateDatabaseDeniedError) as info:
        site.databases.clone(replace(site.section, user="limited").connection(), "bad_next")
    _one_line(info.value, site.section, "Username")
    assert not _has(mariadb, "bad_next")


def _has(mariadb, name: str) -> bool:
    return mariadb.sql(f"SELECT COUNT(*) FROM information_schema.SCHEMATA "
                       f"WHERE SCHEMA_NAME = '{name}';") == "1"


def _one_line(err, section, key: str | None = None) -> None:
    assert err.key == key
    key = f".{key}" if key else ""
    assert err.message.startswith(f"{section.file}: MySQL{key}: "), err.message
    assert "\n" not in err.message and err.hint and PASSWORD not in err.message


def test_facts_over_the_unix_socket(mariadb, site_factory):
    mariadb.sql("CREATE DATABASE `socket` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    section = mariadb.section("socket", "orthanc", PASSWORD, Host="localhost",
                              UnixSocket=str(mariadb.socket))
    server = site_factory.orthanc_on(mariadb, "socket", section=section)
    from orchestrator.orthanc.backends import index_database
    db_section = index_database(load_config(server.config_path))
    assert db_section.transport.value == "unix-socket"
    facts = read_database_index(db_section, site_factory_databases())
    assert facts.error is None and facts.revision == 6 and facts.in_use
    assert facts.where == f"socket {mariadb.socket}"


def test_the_collation_trap_that_restore_avoids(mariadb, site_factory, tmp_path):
    """The same dump loaded into a database in Debian's default collation (utf8mb4_general_ci):
    reads work, every store fails (Illegal mix of collations in CreateInstance)."""
    import requests

    site = site_factory(mariadb, "collation", instances=3)
    site.orthanc.stop()
    dump = site.databases.dump(site.conn, tmp_path / "c.sql")
    mariadb.sql("CREATE DATABASE `collation_default` CHARACTER SET utf8mb4 "
                "COLLATE utf8mb4_general_ci;")  # Debian's server default
    mariadb.sql(f"source {dump.path}\n", "collation_default")
    again = site_factory.orthanc_on(mariadb, "collation_default", storage=site.orthanc.storage)
    assert counts(again)["instances"] == 3
    with pytest.raises(requests.HTTPError):
        store_one(again, "into-default-collation")
    assert "Illegal mix of collations" in again.log_text()


def site_factory_databases():
    from orchestrator.host.changes import Changes
    from orchestrator.host.host import make_databases
    from orchestrator.host.runner import RealRunner
    return make_databases(Changes(), RealRunner())


def test_attachments_in_the_database_come_with_the_clone(mariadb, site_factory):
    """EnableStorage true: the files are rows (BLOBs); the dump carries them (--hex-blob)."""
    import json

    import requests

    from orchestrator.orthanc.backends import index_database
    from tests.harness.databases import MYSQL_PLUGIN, MYSQL_STORAGE_PLUGIN
    from tests.harness.dicom import make_dataset

    mariadb.sql("CREATE DATABASE `blobs` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    section = mariadb.section("blobs", "orthanc", PASSWORD, EnableStorage=True)
    plugins = [str(MYSQL_PLUGIN), str(MYSQL_STORAGE_PLUGIN)]
    first = site_factory.orthanc_on(mariadb, "blobs", section=section, start=False)
    cfg = json.loads(first.config_path.read_text())
    cfg["Plugins"] = plugins
    first.config_path.write_text(json.dumps(cfg))
    first.start()
    first.upload(make_dataset(3, per_series=3, rows=16, cols=16, seed="blobs"))
    db_section = index_database(load_config(first.config_path))
    assert db_section.storage and not db_section.files_on_disk
    first.stop()
    port = site_factory_databases()
    port.clone(db_section.connection(), "blobs_next")
    copy = site_factory.orthanc_on(mariadb, "blobs_next", start=False,
                                   section=dict(section, Database="blobs_next"))
    copy_cfg = json.loads(copy.config_path.read_text())
    copy_cfg["Plugins"] = plugins
    copy.config_path.write_text(json.dumps(copy_cfg))
    copy.start()
    some = copy.get("/instances")
    assert len(some) == 3
    body = requests.get(f"{copy.url}/instances/{some[0]}/file", timeout=30).content
    assert body[128:132] == b"DICM"
