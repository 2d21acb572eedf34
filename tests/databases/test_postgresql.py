"""The database port and the index facts against a real PostgreSQL 15 and Orthanc 1.10.1 +
Debian's orthanc-postgresql 4.0."""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from orchestrator.host.changes import Changes
from orchestrator.host.host import make_databases
from orchestrator.host.databases import (
    ClientToolMissingError, CreateDatabaseDeniedError, DatabaseAuthError, DatabaseBusyError,
    DatabaseExistsError, Databases, DatabaseUnreachableError, DumpSpaceError)
from orchestrator.host.postgresql import PostgreSQLClient
from orchestrator.host.runner import RealRunner
from orchestrator.orthanc.backends import BackendDisabledError, index_database, plugin_version
from orchestrator.orthanc.config import load_config
from orchestrator.orthanc.hazards import assess
from orchestrator.orthanc.plugin_index import backend_plugin, read_database_index, view_database
from tests.databases.conftest import PASSWORD, config_json, counts, store_one
from tests.harness.databases import PG_PLUGIN
from tests.harness.orthanc import free_port

pytestmark = [pytest.mark.orthanc, pytest.mark.slow]


def test_facts_online_then_offline(postgres, site_factory):
    site = site_factory(postgres, "facts")
    online = read_database_index(site.section, site.databases)
    assert online.error is None and online.server.version.startswith("15.")
    assert (online.schema_version, online.revision) == (6, 1)
    assert online.counts == counts(site.orthanc) and online.counts["instances"] == 6
    assert online.in_use and online.sessions and online.size > 0
    assert online.server.can_create_db and not online.has_labels
    assert plugin_version(load_config(site.orthanc.config_path),
                          site.section.engine) == "4.0"
    assert backend_plugin(site.orthanc.get("/system")) == (site.section.engine, "4.0")
    view = view_database(load_config(site.orthanc.config_path), site.databases)
    assert view.plugin_version == "4.0" and view.facts.counts == online.counts
    assert PASSWORD not in json.dumps(view.to_dict())
    found = assess(load_config(site.orthanc.config_path), None, None, **view.hazard_args())
    assert [h.code for h in found if h.severity.value == "blocker"] == []
    assert "copied-index-shares-files" in [h.code for h in found]
    site.orthanc.stop()
    offline = read_database_index(site.section, site.databases)
    assert offline.counts == online.counts and offline.revision == 1
    assert not offline.in_use and offline.sessions == ()
    assert "password" not in json.dumps(offline.to_dict()).lower().replace("password_from", "")


def test_dump_then_restore_into_a_fresh_database(postgres, site_factory, tmp_path):
    site = site_factory(postgres, "dumped")
    before = counts(site.orthanc)
    online = site.databases.dump(site.conn, tmp_path / "online.dump")  # stage: service running
    site.orthanc.stop()
    dump = site.databases.dump(site.conn, tmp_path / "dumped.dump")
    assert online.sha256 and dump.sha256 and dump.size == (tmp_path / "dumped.dump").stat().st_size
    import hashlib
    assert hashlib.sha256(dump.path.read_bytes()).hexdigest() == dump.sha256
    site.databases.restore(site.conn, dump.path, "dumped_restored", sha256=dump.sha256)
    assert site.databases.owner(site.conn, "dumped_restored") == "orthanc"
    again = site_factory.orthanc_on(postgres, "dumped_restored", storage=site.orthanc.storage)
    assert counts(again) == before
    some = again.get("/instances")[0]
    body = requests.get(f"{again.url}/instances/{some}/file", timeout=30).content
    assert body[128:132] == b"DICM"
    assert store_one(again, "after-restore")["Status"] == "Success"
    assert counts(again)["instances"] == before["instances"] + 1
    # The original database did not see that store: it is still the rollback point.
    assert read_database_index(site.section, site.databases).counts == before


def test_clone_is_owned_by_the_plugin_role_and_upgradable(postgres, site_factory):
    site = site_factory(postgres, "cloned")
    before = counts(site.orthanc)
    site.orthanc.stop()
    site.databases.clone(site.conn, "cloned_next")
    assert site.databases.owner(site.conn, "cloned_next") == "orthanc"
    # What the next plugin does at its first start: create a table in schema public.
    _as_orthanc(postgres, "cloned_next", "CREATE TABLE upgrade_probe(x int); "
                                         "DROP TABLE upgrade_probe;")
    again = site_factory.orthanc_on(postgres, "cloned_next", storage=site.orthanc.storage)
    assert counts(again) == before
    assert store_one(again, "after-clone")["Status"] == "Success"


def test_a_clone_without_owner_is_the_trap(postgres, site_factory):
    """The superuser's plain TEMPLATE copy belongs to postgres: reads and stores work, but the
    role cannot create tables, so the next plugin's migration fails."""
    site = site_factory(postgres, "trap")
    site.orthanc.stop()
    postgres.sql('CREATE DATABASE trap_copy TEMPLATE trap;')
    assert site.databases.owner(site.conn, "trap_copy") == "postgres"
    with pytest.raises(RuntimeError, match="permission denied for schema public"):
        _as_orthanc(postgres, "trap_copy", "CREATE TABLE upgrade_probe(x int);")


def test_clone_refused_while_orthanc_is_connected(postgres, site_factory):
    site = site_factory(postgres, "busy")
    with pytest.raises(DatabaseBusyError) as info:
        site.databases.clone(site.conn, "busy_next")
    assert info.value.message.startswith(f"{site.section.file}: PostgreSQL.Database: ")
    assert not site.databases.exists(site.conn, "busy_next")
    # Past the check (someone connects in between), PostgreSQL itself refuses after ~5 s.
    with pytest.raises(DatabaseBusyError):
        PostgreSQLClient(RealRunner()).clone(site.conn, "busy_next", "orthanc", timeout=60)


def test_rename_and_drop(postgres, site_factory):
    site = site_factory(postgres, "renamed")
    site.orthanc.stop()
    site.databases.clone(site.conn, "renamed_next")
    site.databases.rename(site.conn, "renamed_next", "renamed_failed")
    assert site.databases.exists(site.conn, "renamed_failed")
    assert not site.databases.exists(site.conn, "renamed_next")
    site.databases.drop(site.conn, "renamed_failed")
    assert not site.databases.exists(site.conn, "renamed_failed")


def test_dry_run_never_writes(postgres, site_factory, tmp_path):
    site = site_factory(postgres, "dry")
    site.orthanc.stop()
    before = postgres.sql("SELECT datname FROM pg_database ORDER BY 1;")
    log_mark = len(postgres.log_text())
    dry = make_databases(Changes(dry=True), RealRunner())
    dump = dry.dump(site.conn, tmp_path / "dry.dump")
    dry.clone(site.conn, "dry_next")
    dry.restore(site.conn, tmp_path / "dry.dump", "dry_restored")
    dry.rename(site.conn, "dry_next", "dry_failed")
    assert dump.sha256 is None and not (tmp_path / "dry.dump").exists()
    assert len(dry.changes.texts()) == 4
    assert postgres.sql("SELECT datname FROM pg_database ORDER BY 1;") == before
    ddl = postgres.log_text()[log_mark:]
    assert "CREATE" not in ddl and "ALTER" not in ddl and "DROP" not in ddl, ddl


# -- bad input: each a one-line error naming the config file and section ---------------------
def test_unreachable_database(postgres, site_factory, tmp_path):
    site = site_factory(postgres, "unreach")
    section = replace(site.section, port=free_port())
    facts = read_database_index(section, site.databases)
    assert not facts.reachable and "unreachable" in facts.error
    assert assess(None, None, None, backends=(section,), database=facts)[0].code == \
        "database-unreachable"
    with pytest.raises(DatabaseUnreachableError) as info:
        site.databases.dump(section.connection(), tmp_path / "x.dump")
    _one_line(info.value, section, "Host")


def test_wrong_password(postgres, site_factory, tmp_path):
    site = site_factory(postgres, "wrongpw")
    section = replace(site.section, password="not-the-password")
    with pytest.raises(DatabaseAuthError) as info:
        site.databases.clone(section.connection(), "wrongpw_next")
    _one_line(info.value, section, "Password")
    assert "not-the-password" not in info.value.message + (info.value.hint or "")


def test_role_without_createdb(postgres, site_factory):
    postgres.add_role("nocreate", PASSWORD, createdb=False, database="nocreate")
    site = site_factory(postgres, "nc_probe")
    section = replace(site.section, user="nocreate", database="nocreate")
    facts = read_database_index(section, site.databases)
    assert facts.server is not None and not facts.server.can_create_db
    with pytest.raises(CreateDatabaseDeniedError) as info:
        site.databases.clone(section.connection(), "nocreate_next")
    _one_line(info.value, section, "Username")
    assert "CREATEDB" in info.value.hint


def test_target_name_exists(postgres, site_factory):
    site = site_factory(postgres, "taken")
    site.orthanc.stop()
    with pytest.raises(DatabaseExistsError) as info:
        site.databases.clone(site.conn, "postgres")
    _one_line(info.value, site.section)


def test_disk_too_small_for_the_dump(postgres, site_factory):
    site = site_factory(postgres, "nospace")
    small = Path(tempfile.mkdtemp(prefix="orch-db-tmpfs-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    try:
        if not mounted:
            pytest.skip("cannot mount a small tmpfs here")
        with pytest.raises(DumpSpaceError) as info:
            site.databases.dump(site.conn, small / "x.dump")
        _one_line(info.value, site.section)
        assert not list(small.iterdir())
    finally:
        if mounted:
            subprocess.run(["umount", str(small)], check=True)
        small.rmdir()


def test_pg_dump_missing(postgres, site_factory, tmp_path):
    site = site_factory(postgres, "notool")
    port = Databases(Changes(), clients=[PostgreSQLClient(
        RealRunner(), bindir=str(tmp_path / "empty-bin"))])
    with pytest.raises(ClientToolMissingError) as info:
        port.server(site.conn)
    _one_line(info.value, site.section)


def test_section_present_but_disabled(postgres, site_factory):
    """EnableIndex "true" (a string) and the plugin not in Plugins: Orthanc silently opens an
    empty SQLite index; the tool refuses. EnableIndex false is a SQLite site for both."""
    site = site_factory(postgres, "disabled", instances=3)
    cfg = config_json(site.orthanc)
    site.orthanc.stop()
    cfg["PostgreSQL"]["EnableIndex"] = "true"
    cfg["Plugins"] = []
    site.orthanc.config_path.write_text(json.dumps(cfg))
    site.orthanc.start()
    assert site.orthanc.get("/system")["DatabaseBackendPlugin"] is None
    assert site.orthanc.statistics()["CountInstances"] == 0
    with pytest.raises(BackendDisabledError) as info:
        index_database(load_config(site.orthanc.config_path))
    assert info.value.exit_code == 2 and "PostgreSQL.EnableIndex" in info.value.message
    assert "uses SQLite" in info.value.message and "\n" not in info.value.message
    site.orthanc.stop()
    cfg["PostgreSQL"]["EnableIndex"] = False
    cfg["Plugins"] = [str(PG_PLUGIN)]
    site.orthanc.config_path.write_text(json.dumps(cfg))
    site.orthanc.start()
    assert site.orthanc.get("/system")["DatabaseBackendPlugin"] is None
    assert index_database(load_config(site.orthanc.config_path)) is None


def test_flag_that_is_not_a_boolean_stops_orthanc(postgres, site_factory):
    """EnableIndex "true" (a string) with the plugin loaded: plugin 4.0 stops Orthanc."""
    site = site_factory(postgres, "notbool", instances=3)
    cfg = config_json(site.orthanc)
    cfg["PostgreSQL"]["EnableIndex"] = "true"
    site.orthanc.stop()
    site.orthanc.config_path.write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="Orthanc exited"):
        site.orthanc.start()
    assert "is not a Boolean as expected" in site.orthanc.log_text()
    config = load_config(site.orthanc.config_path)
    assert "backend-flag-not-boolean" in [h.code for h in assess(config, None, None)]
    with pytest.raises(BackendDisabledError):
        index_database(config)


def _one_line(err, section, key: str | None = None) -> None:
    assert err.key == key
    key = f".{key}" if key else ""
    assert err.message.startswith(f"{section.file}: PostgreSQL{key}: "), err.message
    assert "\n" not in err.message and err.hint
    assert PASSWORD not in err.message


def _as_orthanc(postgres, database: str, sql: str) -> None:
    env_file = Path(tempfile.mkdtemp(prefix="orch-db-pgpass-")) / "pgpass"
    env_file.write_text(f"*:*:*:orthanc:{PASSWORD}\n")
    env_file.chmod(0o600)
    try:
        done = subprocess.run(["psql", "-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                               "-p", str(postgres.port), "-U", "orthanc", "-d", database],
                              input=sql, capture_output=True, text=True,
                              env={"PGPASSFILE": str(env_file), "PATH": "/usr/bin:/bin"})
        if done.returncode:
            raise RuntimeError(done.stderr.strip())
    finally:
        env_file.unlink()
        env_file.parent.rmdir()


def test_attachments_in_the_database_come_with_the_clone_and_the_dump(postgres, site_factory,
                                                                      tmp_path):
    """EnableStorage true: the files are large objects, nothing lands in StorageDirectory."""
    from tests.harness.databases import PG_STORAGE_PLUGIN
    from tests.harness.dicom import make_dataset

    postgres.sql('CREATE DATABASE "blobs" OWNER orthanc;')
    section = postgres.section("blobs", "orthanc", PASSWORD, EnableStorage=True)
    first = site_factory.orthanc_on(postgres, "blobs", section=section)
    cfg = config_json(first)
    first.stop()
    cfg["Plugins"] = [str(PG_PLUGIN), str(PG_STORAGE_PLUGIN)]
    first.config_path.write_text(json.dumps(cfg))
    first.start()
    assert first.get("/system")["StorageAreaPlugin"]
    first.upload(make_dataset(3, per_series=3, rows=16, cols=16, seed="blobs"))
    assert not any(p.is_file() and p.name != "index" for p in first.storage.rglob("*"))
    db_section = index_database(load_config(first.config_path))
    assert db_section is not None and db_section.storage and not db_section.files_on_disk
    first.stop()
    port = make_databases(Changes(), RealRunner())
    port.clone(db_section.connection(), "blobs_next")
    dump = port.dump(db_section.connection(), tmp_path / "blobs.dump")
    port.restore(db_section.connection(), dump.path, "blobs_restored")
    for name in ("blobs_next", "blobs_restored"):
        copy = site_factory.orthanc_on(postgres, name, start=False,
                                       section=dict(section, Database=name))
        copy_cfg = config_json(copy)
        copy_cfg["Plugins"] = cfg["Plugins"]
        copy.config_path.write_text(json.dumps(copy_cfg))
        copy.start()
        some = copy.get("/instances")
        assert len(some) == 3
        body = requests.get(f"{copy.url}/instances/{some[0]}/file", timeout=30).content
        assert body[128:132] == b"DICM"
        copy.stop()


def test_facts_and_dump_over_the_unix_socket(postgres, site_factory, tmp_path):
    postgres.sql('CREATE DATABASE "socket" OWNER orthanc;')
    section = postgres.section("socket", "orthanc", PASSWORD, Host=str(postgres.socket_dir))
    server = site_factory.orthanc_on(postgres, "socket", section=section)
    db_section = index_database(load_config(server.config_path))
    assert db_section.transport.value == "unix-socket"
    facts = read_database_index(db_section, make_databases(Changes(), RealRunner()))
    assert facts.error is None and facts.revision == 1 and facts.in_use
    assert facts.where.startswith("socket ")
    assert make_databases(Changes(), RealRunner()).dump(db_section.connection(),
                                                   tmp_path / "s.dump").sha256


def test_an_empty_database_is_not_an_orthanc_index(postgres, site_factory):
    postgres.sql('CREATE DATABASE "empty" OWNER orthanc;')
    site = site_factory(postgres, "empty_probe", instances=0)
    section = replace(site.section, database="empty")
    facts = read_database_index(section, site.databases)
    assert facts.reachable and "not (yet) an Orthanc index" in facts.error
    assert facts.size > 0 and facts.tables == ()
    found = assess(None, None, None, backends=(section,), database=facts)
    assert found[0].code == "database-unreadable"


def test_clone_then_point_the_config_at_it(postgres, site_factory):
    """The relocate mechanics: clone after the stop, rewrite Database in place (comments kept),
    start on the clone; the old database is the untouched rollback point."""
    from orchestrator.orthanc.config_edit import set_string_value

    site = site_factory(postgres, "reloc")
    before = counts(site.orthanc)
    site.orthanc.stop()
    path = site.orthanc.config_path
    original = "// written by the test\n" + path.read_text()
    path.write_text(original)
    site.databases.clone(site.conn, "reloc_next")
    path.write_text(set_string_value(original, "Database", "reloc_next", section="PostgreSQL"))
    assert index_database(load_config(path)).database == "reloc_next"
    site.orthanc.start()
    assert counts(site.orthanc) == before
    assert store_one(site.orthanc, "after-relocate")["Status"] == "Success"
    site.orthanc.stop()
    assert read_database_index(site.section, site.databases).counts == before  # old: untouched
    path.write_text(original)  # undo: the config back byte for byte
    site.orthanc.start()
    assert counts(site.orthanc) == before
